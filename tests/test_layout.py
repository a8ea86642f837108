"""The shape of the code base, read from its source: the project's modules import each other without a circle,
bench/ imports the project like any user code, importing ``models`` changes nothing, and one estimator fits every
head."""

import ast
import os
import subprocess
import sys

from helpers import REPO

PACKAGES = ("models", "scraper", "bench")
SCRIPTS = ("scraper.py", "train.py", "train_model.py", "test_model.py")


def project_files():
    files = [os.path.join(REPO, name) for name in SCRIPTS]
    for package in PACKAGES:
        folder = os.path.join(REPO, package)
        files += [os.path.join(folder, name) for name in sorted(os.listdir(folder)) if name.endswith(".py")]
    return files


def module_name(path):
    relative = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    return relative.removesuffix(".__init__")


def imports_of(path, known):
    """The project modules ``path`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def test_the_project_imports_itself_without_a_circle():
    files = {module_name(path): path for path in project_files()}
    graph = {name: imports_of(path, files) - {name} for name, path in files.items()}
    # a package imports its modules' names only through them, so leave the package -> module edges out
    graph = {name: {other for other in edges if not other.startswith(name + ".")} for name, edges in graph.items()}
    state, circles = {}, []

    def visit(name, path):
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                circles.append(path[path.index(other):] + [other])
            elif other not in state:
                visit(other, path + [other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, circles


def test_bench_imports_the_project_like_user_code():
    for path in project_files():
        source = open(path, encoding="utf-8").read()
        tree = ast.parse(source)
        assert "sys.path.insert" not in source and "sys.path.append" not in source, path
        for node in ast.walk(tree):  # no assignment into another module (a monkeypatch)
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute):
                        base = target.value
                        while isinstance(base, ast.Attribute):
                            base = base.value
                        assert not (isinstance(base, ast.Name) and base.id in PACKAGES), (path, node.lineno)


def test_importing_the_project_sets_nothing_up():
    code = ("import os, sys; before = dict(os.environ); "
            "import models, models.classifier, models.training, models.evaluation, models.predict, models.export, "
            "models.onnx_predict, scraper.process, "
            "bench.accuracy, bench.audit, train, train_model, test_model; "
            "assert dict(os.environ) == before, set(os.environ) ^ set(before); "
            "assert 'mxnet' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    assert done.returncode == 0, done.stderr


def test_one_estimator_fits_every_head():
    """The training loop and the seeded initialisation (models/epochs.py) are called from models/classifier.py
    alone, and nothing else fits a head: every other module that trains goes through HeadClassifier."""
    for path in project_files():
        source = open(path, encoding="utf-8").read()
        calls = {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                 for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)}
        if module_name(path) not in ("models.classifier", "models.epochs"):
            assert not calls & {"train_epochs", "initialised_net", "sgd_step", "feature_scaling"}, path
            assert "autograd.record" not in source or module_name(path) in ("models.heatmaps", "bench.child"), path
