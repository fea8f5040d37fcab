"""axial_deploy.engine."""
