# The model repository as an image, for the init container in deploy/k8s/deployment.yaml: it
# copies /repository (models/, plugins/, launch.sh, repository.json) onto the pod's volume.
# Build it from the folder `axial-deploy triton-repo ... --out repo` wrote:
#   docker build -f deploy/k8s/repository.Dockerfile -t REGISTRY/axial-model-repository:TAG repo
#   docker push REGISTRY/axial-model-repository:TAG
# BusyBox: a small image with `cp`, which the init container runs.
FROM busybox:1.37.0
COPY . /repository
