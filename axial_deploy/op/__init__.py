"""axial_deploy.op."""
