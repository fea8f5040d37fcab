"""axial_deploy.pipeline."""
