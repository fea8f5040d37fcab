"""axial_deploy.checks."""
