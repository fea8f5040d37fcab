"""axial_deploy.datasets."""
