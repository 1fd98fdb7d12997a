"""The layering holds (the import contracts in .importlinter) and gpuconsole's import graph has no cycle.

Both read the real source with grimp (the import graph library under import-linter), imports inside
functions included; the cycle check reads the graph twice, once as it runs and once with the
`if TYPE_CHECKING:` imports too (a cycle only the type checker sees is still two modules that need
each other). Each has a negative control: an import added to the real graph must be caught.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter import configuration
from importlinter.application import use_cases
from importlinter.application.app_config import settings
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract
from importlinter.domain.contract import registry

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".importlinter"
ROOT = "gpuconsole"


def runtime_graph(package: str = ROOT) -> grimp.ImportGraph:
    """The package's modules and what each imports at run time (`if TYPE_CHECKING:` imports left out)."""
    return grimp.build_graph(package, exclude_type_checking_imports=True, cache_dir=None)


def typing_graph(package: str = ROOT) -> grimp.ImportGraph:
    """The package's modules and everything each imports, `if TYPE_CHECKING:` imports included."""
    return grimp.build_graph(package, exclude_type_checking_imports=False, cache_dir=None)


def cycles(graph: grimp.ImportGraph, package: str = ROOT) -> dict[str, set[tuple[str, str]]]:
    """For every package with a cycle among its children, the imports whose removal would break it.

    A cycle anywhere in the module graph shows up among the children of the innermost package that
    holds all its modules, so checking every package's children covers the whole graph.
    """
    found: dict[str, set[tuple[str, str]]] = {}
    breakers = graph.nominate_cycle_breakers(package)
    if breakers:
        found[package] = set(breakers)
    for child in sorted(graph.find_children(package)):
        found.update(cycles(graph, child))
    return found


def _describe(graph: grimp.ImportGraph, found: dict[str, set[tuple[str, str]]]) -> str:
    lines = []
    for package, breakers in sorted(found.items()):
        for importer, imported in sorted(breakers):
            where = [f"{detail['importer']}:{detail['line_number']} {detail['line_contents']}"
                     for detail in _details_between(graph, importer, imported)]
            lines.append(f"{package}: {importer} -> {imported} ({'; '.join(where) or 'via a child'})")
    return "\n".join(lines)


def _details_between(graph: grimp.ImportGraph, importer: str, imported: str) -> Iterator[dict[str, Any]]:
    """The import statements from `importer` (or a module in it) to `imported` (or a module in it)."""
    for source in {importer} | graph.find_descendants(importer):
        for target in {imported} | graph.find_descendants(imported):
            yield from graph.get_import_details(importer=source, imported=target)


@pytest.mark.parametrize("build", [runtime_graph, typing_graph], ids=["runtime", "type_checking"])
def test_import_graph_has_no_cycle(build: Callable[[], grimp.ImportGraph]) -> None:
    graph = build()
    found = cycles(graph)
    assert not found, "import cycles (remove one of the listed imports):\n" + _describe(graph, found)


def test_cycle_check_finds_an_added_cycle() -> None:
    """Negative control: errors is imported by nearly everything, so errors -> cli closes a cycle."""
    graph = runtime_graph()
    graph.add_import(importer="gpuconsole.errors", imported="gpuconsole.cli.output")
    assert ("gpuconsole.errors", "gpuconsole.cli.output") in cycles(graph).get(ROOT, set())


@pytest.mark.parametrize("guard", [
    "TYPE_CHECKING = False\nif TYPE_CHECKING:\n",  # the node agent's idiom (no typing import at run time)
    "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n",
], ids=["node_idiom", "typing"])
def test_cycle_check_finds_a_type_checking_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 guard: str) -> None:
    """Negative control: a cycle closed by an `if TYPE_CHECKING:` import (the shape agent.py and
    service.py once had) is invisible at run time and caught by the type-checking graph."""
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "agent.py").write_text("from cyclic import service\n\n\nclass Agent:\n    pass\n")
    (package / "service.py").write_text(guard + "    from cyclic.agent import Agent\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not cycles(runtime_graph("cyclic"), "cyclic")
    assert cycles(typing_graph("cyclic"), "cyclic") == {"cyclic": {("cyclic.service", "cyclic.agent")}}


class _GraphWithExtraImports:
    """import-linter's graph builder, plus imports the real source does not have."""

    def __init__(self, real: Any, extra: list[tuple[str, str]]) -> None:
        self.real = real
        self.extra = extra

    def build(self, **kwargs: Any) -> grimp.ImportGraph:
        graph = self.real.build(**kwargs)
        for importer, imported in self.extra:
            graph.add_import(importer=importer, imported=imported)
        return graph


def _broken_contracts(extra: list[tuple[str, str]]) -> set[str]:
    """Names of the .importlinter contracts the source breaks, with `extra` imports added to it."""
    configuration.configure()
    # create_report (unlike lint_imports) does not register the built-in contract types: without
    # this, the result hung on whether another test in this process had run lint-imports first.
    registry.register(ForbiddenContract, "forbidden")
    registry.register(LayersContract, "layers")
    real = settings.GRAPH_BUILDER
    settings.configure(GRAPH_BUILDER=_GraphWithExtraImports(real, extra))
    try:
        report = use_cases.create_report(use_cases.read_user_options(str(CONFIG)), cache_dir=None)
    finally:
        settings.configure(GRAPH_BUILDER=real)
    assert not report.could_not_run, report.invalid_contract_options
    return {contract.name for contract, check in report.get_contracts_and_checks() if not check.kept}


def test_import_contracts_are_kept() -> None:
    """`lint-imports` (what .ci/run runs) passes; on failure the report above names each import."""
    configuration.configure()
    assert use_cases.lint_imports(config_filename=str(CONFIG), cache_dir=None, no_logo=True)


@pytest.mark.parametrize(("importer", "imported", "contract"), [
    ("gpuconsole.model.fleet", "gpuconsole.ssh.connection", "model/ does no I/O"),
    ("gpuconsole.model.fleet", "asyncssh", "model/ does no I/O"),
    ("gpuconsole.node.agent", "gpuconsole.errors", "node/ is shipped alone"),
    ("gpuconsole.core.fleet", "gpuconsole.tui.app", "core/ imports no front end"),
    ("gpuconsole.core.fleet", "gpuconsole.cli.output", "Layers"),
    ("gpuconsole.watch.runner", "textual", "Only gpuconsole.tui imports Textual"),
    ("gpuconsole.cli.status", "boto3", "Only gpuconsole.cloud imports boto3"),
    ("gpuconsole.demo.cloud", "moto", "Only gpuconsole.cloud imports boto3"),
])
def test_contracts_catch_an_added_import(importer: str, imported: str, contract: str) -> None:
    """Negative control: each contract breaks when the import it forbids is added to the real graph."""
    broken = _broken_contracts([(importer, imported)])
    assert any(name.startswith(contract) for name in broken), broken
