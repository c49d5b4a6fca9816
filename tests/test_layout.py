"""The package's shape: no import cycle, a CLI that only calls the public library, short command functions.

Static checks (``ast``, nothing is imported), so they hold for every import, including the ones
inside functions that a runtime check would never execute.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "anomaly_ae"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every ``anomaly_ae`` module ``path`` imports anywhere (functions, ``TYPE_CHECKING`` blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from a.b import c`` imports a.b, and a.b.c when c is a module
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "anomaly_ae":
                continue
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            # importing a.b.c also runs the sub-package a.b's __init__ (the root facade imports nothing at
            # import time: its names load on first access, checked in test_root_facade_imports_nothing)
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return found - {"anomaly_ae"}


def _ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_package():
    modules = _modules()
    # a module's own packages are already importing when it runs: no edge back to them
    graph = {m: _imports(p, modules) - {m} - _ancestors(m) for m, p in modules.items() if m != "anomaly_ae"}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


#: the package's floors, bottom first. A module may import its own sub-package and anything on a lower
#: floor or on its own (the cycle test above keeps a floor free of cycles), never a higher floor:
#: config < data, models, scoring < postprocessing, evaluation < training < detector < deploy < pipelines < cli.
#: training and evaluation sit *below* the detector, as keras's Trainer sits below Model: Detector.fit and
#: Detector.self_check use them; they never import the detector (they take and return plain values).
FLOORS: dict[str, int] = {
    "version": 0, "config": 0, "io": 0, "backend": 0,
    "progress": 1, "tracking": 1, "data": 1, "models": 1, "scoring": 1, "outputs": 1,
    "postprocessing": 2, "evaluation": 2, "reports": 2,
    "training": 3, "artifact": 3,
    "detector": 4,
    "deploy": 5,
    "pipelines": 6, "segmentation": 6,
    "cli": 7, "__main__": 7, "": 7,  # "": the root facade (anomaly_ae/__init__.py), whose names load lazily
}


def _group(module: str) -> str:
    """``anomaly_ae.pipelines.score`` -> ``pipelines``; ``anomaly_ae`` -> ``""``."""
    return module.split(".")[1] if "." in module else ""


def _upward_imports(modules: dict[str, Path]) -> list[str]:
    found = []
    for m, p in modules.items():
        for i in _imports(p, modules) - _ancestors(m) - {m}:
            if _group(i) != _group(m) and FLOORS[_group(i)] > FLOORS[_group(m)]:
                found.append(f"{m} (floor {FLOORS[_group(m)]}) imports {i} (floor {FLOORS[_group(i)]})")
    return found


def test_every_module_has_a_floor():
    assert {_group(m) for m in _modules()} == set(FLOORS)


def test_no_import_points_up_a_floor():
    """Every import counts: module level, inside functions and in ``TYPE_CHECKING`` blocks."""
    assert _upward_imports(_modules()) == []


def test_the_floor_check_sees_an_upward_import_inside_a_function(tmp_path):
    planted = tmp_path / "scoring.py"
    planted.write_text("def f():\n    from anomaly_ae.detector import Detector\n", encoding="utf-8")
    modules = {**_modules(), "anomaly_ae.scoring.planted": planted}
    assert _upward_imports(modules) == ["anomaly_ae.scoring.planted (floor 1) imports anomaly_ae.detector (floor 4)"]
    typed = tmp_path / "typed.py"
    typed.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import anomaly_ae.pipelines.score\n",
                     encoding="utf-8")
    assert len(_upward_imports({**_modules(), "anomaly_ae.data.typed": typed})) == 2  # pipelines and .score


def _string_constants(path: Path) -> list[tuple[str, int]]:
    """``(value, line)`` of every string literal of ``path`` but docstrings (f-string parts included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.value, n.lineno) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_file_names_are_spelled_once_in_io_names():
    """``scores.csv``, ``detector.json``, ... as a literal only in :mod:`anomaly_ae.io.names` (messages and
    docstrings may name them inside longer text)."""
    from anomaly_ae.io import names

    spelled = {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
    spelled |= set(names.SCORE_OUTPUTS)  # heatmaps, masks, maps: keys of output kinds, also used as names
    assert {"scores.csv", "detector.json", "score_run.json", "metrics.json"} <= spelled
    elsewhere = [f"{p.relative_to(ROOT)}:{line} {value!r}" for p in PACKAGE.rglob("*.py")
                 if p != PACKAGE / "io" / "names.py"
                 for value, line in _string_constants(p) if value in spelled - set(names.SCORE_OUTPUTS)]
    assert elsewhere == []


#: rules defined once: a name -> the module that defines it; the source text that computes it appears there only
RULES = {
    "smoothing_size": ("anomaly_ae.scoring.maps", "ceil(4.0 *"),  # the smoothing kernel's length
    "model_sigma": ("anomaly_ae.scoring.maps", "model_hw[0] / original_hw[0]"),  # original -> model pixels
    "source_ratio": ("anomaly_ae.scoring.maps", "np.sqrt(original_hw[0]"),  # model -> original pixels
    "original_hw": ("anomaly_ae.data.images", "source_size or"),  # the original size, else the model's
    "original_sizes": ("anomaly_ae.data.loading", "// limit)"),  # image_size: auto's sample of images
    "scoring_text": ("anomaly_ae.config", "map, sigma"),  # the "metric, sigma, reduction" sentence
    "scoring_record": ("anomaly_ae.config", "SCORING_CHOICES}"),  # the same as JSON
    "reference_indices": ("anomaly_ae.scoring.position", "choice(train_idx, n, replace=False)"),  # norm images
    "resolve_config": ("anomaly_ae.config", "DetectorConfig.from_yaml(path)"),  # --config file or preset
    "is_anomalous": ("anomaly_ae.postprocessing", "> self.threshold"),  # the image verdict
}


#: names of the calibrated thresholds: comparing a value against one of them is a decision, which only
#: ``PostProcessor.is_anomalous`` and ``PostProcessor.mask`` take
THRESHOLD_NAMES = {"threshold", "pixel_threshold", "threshold_", "pixel_threshold_"}
#: modules whose ``threshold`` is another quantity: a noise level of synthetic defects, the segmenter's own
#: probability cut, the candidate cuts of a metric's curve
OTHER_THRESHOLDS = {"anomaly_ae.data.anomalies", "anomaly_ae.segmentation.predict", "anomaly_ae.evaluation.metrics"}


def _threshold_comparisons(path: Path) -> list[int]:
    """Lines of ``path`` that compare something against a threshold (``x > threshold``, ``s <= post.threshold``)."""
    def named(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id in THRESHOLD_NAMES) or \
            (isinstance(node, ast.Attribute) and node.attr in THRESHOLD_NAMES)

    return [n.lineno for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.Compare) and any(isinstance(op, ast.Gt | ast.GtE | ast.Lt | ast.LtE) for op in n.ops)
            and any(named(x) for x in [n.left, *n.comparators])]


def test_every_decision_is_the_post_processors():
    """The verdict (``score > threshold``) and the mask (``map > pixel_threshold``) are written once, in
    ``PostProcessor.is_anomalous`` and ``PostProcessor.mask``; everything else asks them."""
    found = [f"{m}:{line}" for m, p in _modules().items()
             if m not in OTHER_THRESHOLDS | {"anomaly_ae.postprocessing"} for line in _threshold_comparisons(p)]
    assert found == []
    post = _threshold_comparisons(PACKAGE / "postprocessing.py")
    assert len(post) >= 2  # the two decisions (and the false-alarm counts of the calibration)


def test_the_decision_check_sees_a_planted_comparison(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f(s, post):\n    return s > post.threshold\n\ndef g(m, pixel_threshold):\n"
                       "    return pixel_threshold <= m\n", encoding="utf-8")
    assert _threshold_comparisons(planted) == [2, 5]


@pytest.mark.parametrize("name", sorted(RULES))
def test_each_rule_is_defined_once(name: str):
    home, core = RULES[name]
    modules = _modules()
    defined = [m for m, p in modules.items() for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
               if isinstance(n, ast.FunctionDef) and n.name == name]
    assert defined == [home]
    computed = [m for m, p in modules.items() if core in p.read_text(encoding="utf-8")]
    assert computed == [home], f"{core!r} computed in {computed}"


def test_root_facade_imports_nothing_at_import_time_but_the_version():
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    ours = [n.module for n in top if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("anomaly_ae")]
    assert ours == ["anomaly_ae.version"]
    for m, p in _modules().items():  # and no library module goes through the facade (the CLI is its user)
        if m.startswith(("anomaly_ae.cli", "anomaly_ae.__main__")):
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "anomaly_ae" and m != "anomaly_ae":
                pytest.fail(f"{m} imports from the package facade ({[a.name for a in node.names]})")


def test_sub_package_inits_import_no_sibling():
    for init in PACKAGE.glob("*/__init__.py"):
        if init.parent.name == "models":  # the model registry is the one sub-package with a public table
            continue
        tree = ast.parse(init.read_text(encoding="utf-8"))
        assert not [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)], init


CLI_FILES = sorted((PACKAGE / "cli").glob("*.py"))


def test_no_library_module_imports_the_cli():
    """The CLI sits on top: it imports the library, never the other way round."""
    modules = _modules()
    for m, p in modules.items():
        if not m.startswith(("anomaly_ae.cli", "anomaly_ae.__main__")):
            assert not {i for i in _imports(p, modules) if i.startswith("anomaly_ae.cli")}, m


@pytest.mark.parametrize("path", CLI_FILES, ids=lambda p: p.name)
def test_cli_imports_only_public_library_names(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("anomaly_ae"):
            private = [p for p in node.module.split(".") if p.startswith("_")]
            # dunders (__version__) are public by Python convention
            private += [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
            assert not private, f"{path.name}:{node.lineno} imports private {private} from {node.module}"


@pytest.mark.parametrize("path", CLI_FILES, ids=lambda p: p.name)
def test_cli_command_functions_are_short(path: Path):
    """A command parses, calls one library function and prints: under 60 lines, signature included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    commands = [f for f in tree.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")]
    for f in commands:
        start = min([f.lineno, *(d.lineno for d in f.decorator_list)])
        assert f.end_lineno - start + 1 < 60, f"{path.name}: {f.name} has {f.end_lineno - start + 1} lines"


def test_command_length_check_sees_long_functions(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    tree = ast.parse(f"def cmd():\n{body}\n")
    f = tree.body[0]
    assert f.end_lineno - f.lineno + 1 >= 60


#: the longest function of the package, docstring included, and the most parameters a public function takes
#: (``self``/``cls`` and ``*args``/``**fields`` not counted: a record's fields as keywords build that record)
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 8


def _functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _too_long(path: Path) -> list[str]:
    return [f"{path.name}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)" for f in _functions(path)
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]


def _too_many_parameters(path: Path) -> list[str]:
    found = []
    for f in _functions(path):
        a = f.args
        named = [x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs] if x.arg not in ("self", "cls")]
        if not f.name.startswith("_") and len(named) > MAX_PARAMETERS:
            found.append(f"{path.name}:{f.lineno} {f.name} ({len(named)} parameters)")
    return found


def test_no_function_is_longer_than_sixty_lines():
    assert [line for p in sorted(PACKAGE.rglob("*.py")) for line in _too_long(p)] == []


def test_no_public_function_takes_more_than_eight_parameters_but_the_commands():
    """A CLI command declares one parameter per flag (typer reads its signature); it builds the options record
    and passes it on whole. Everything else takes at most eight, one of them the record."""
    library = [p for p in sorted(PACKAGE.rglob("*.py")) if p.parent.name != "cli"]
    assert [line for p in library for line in _too_many_parameters(p)] == []


def test_the_length_and_parameter_checks_see_a_planted_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    planted = tmp_path / "planted.py"
    planted.write_text(f"def long(a, b, c, d, e, f, g, h, i, *rest, **fields):\n{body}\n\n"
                       "def ok(self, a, b, c, d, e, f, g, h, **fields):\n    pass\n", encoding="utf-8")
    assert _too_long(planted) == [f"planted.py:1 long ({MAX_FUNCTION_LINES + 1} lines)"]
    assert _too_many_parameters(planted) == ["planted.py:1 long (9 parameters)"]


def test_the_detector_stays_the_estimator():
    """``detector.py`` is fit / score / maps / predict / save / load, at most 300 lines: inference is the
    Scorer's, runs (folders, trackers, locks) the Engine's."""
    text = (PACKAGE / "detector.py").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    imported = _imports(PACKAGE / "detector.py", _modules())
    assert not {m for m in imported if m.startswith(("anomaly_ae.tracking", "anomaly_ae.io.folders",
                                                    "anomaly_ae.pipelines"))}
