"""The layout's rules (docs/architecture.md): data flows one way through the stages, settings are a leaf,
and the deployment path loads neither pandas nor the reorganisation code."""
import ast
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGE = pathlib.Path(REPO) / "gluon_cifar"
STAGES = ["data", "model", "training", "deploy"]  # in the order data flows
TOP = {"pipeline", "train", "predict", "export", "launch", "interpret"}  # wiring and commands: imported by no stage


def package_imports(path):
    """The gluon_cifar modules `path` imports (anywhere in it), as dotted names below gluon_cifar."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gluon_cifar"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("gluon_cifar"))
    return {name.split(".", 1)[1] for name in found if "." in name}


def stage_of(module):
    first = module.split(".")[0]
    return first if first in STAGES else None


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield ".".join(path.relative_to(PACKAGE).with_suffix("").parts), path


def violations(module, path):
    """The imports of `module` (its source at `path`) that break the layout's rules."""
    if module.split(".")[0] in TOP:
        return []
    mine = stage_of(module)
    return [imported for imported in package_imports(path) if imported.split(".")[0] in TOP
            or (mine and stage_of(imported) and STAGES.index(stage_of(imported)) > STAGES.index(mine))]


@pytest.mark.parametrize("module,path", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_a_stage_imports_only_earlier_stages_and_never_the_wiring(module, path):
    assert violations(module, path) == []


def test_the_rule_catches_an_import_of_a_later_stage_or_of_the_wiring(tmp_path):
    source = tmp_path / "loaders.py"
    source.write_text("from gluon_cifar.deploy.predict import predict\nfrom gluon_cifar import pipeline\n")
    assert {name.split(".")[0] for name in violations("data.loaders", source)} == {"deploy", "pipeline"}


def test_settings_import_no_stage():
    imported = package_imports(PACKAGE / "settings.py")
    assert not [name for name in imported if stage_of(name) or name.split(".")[0] in TOP], imported


def test_the_deployment_path_loads_neither_pandas_nor_the_reorganisation():
    script = ("import sys, gluon_cifar.predict, gluon_cifar.export; "
              "print(sorted(m for m in sys.modules if m == 'pandas' or m.startswith(('gluon_cifar.data.reorg', "
              "'gluon_cifar.data.locations', 'gluon_cifar.data.fingerprint', 'gluon_cifar.data.parallel', "
              "'gluon_cifar.data.placement', 'gluon_cifar.data.labels', 'gluon_cifar.training'))))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
