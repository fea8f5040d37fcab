"""axial_deploy.evaluation."""
