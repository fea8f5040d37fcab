"""The model zoo's names, importable without torch.

`axial-deploy CMD --help` lists them (cli/args.py `add_zoo_model`), and `--help` must start
without importing torch, which the zoo itself (models/zoo.py) needs. tests/test_install.py
checks that this tuple equals `axial_deploy.models.list_models()`, in its order. Where the zoo's
registry is itself importable without torch, `add_zoo_model` should read `list_models()` and this
module can go.
"""

ZOO_MODELS: tuple[str, ...] = (
    "axial26s",
    "axial50s",
    "axial50m",
    "axial50l",
    "axial_deeplab_s",
    "axial_deeplab_m",
    "axial_deeplab_l",
    "axial_deeplab_xl",
    "axial26_tiny",
    "axial_deeplab_tiny",
)
