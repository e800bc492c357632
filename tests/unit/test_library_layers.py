"""Inside ``daemon/library``: storage below policy, no import cycles (function-level imports included).

Layers, lowest first: ``keys`` (the key definition) → ``models`` (columns derived from it) → ``integrity``/``layout``
→ ``store`` (no policy) → ``selection`` (the usable-master rule) and ``review`` → ``catalog``. A module may import only
from lower layers. (The project-wide layers contract over ``daemon/`` lives in ``pyproject.toml``.)
"""

from __future__ import annotations

import grimp

LAYERS = [
    {"daemon.library.keys"},
    {"daemon.library.models", "daemon.library.integrity", "daemon.library.layout"},
    {"daemon.library.store"},
    {"daemon.library.selection", "daemon.library.review", "daemon.library.ageing", "daemon.library.verify"},
    {"daemon.library.catalog"},
]


def test_library_modules_import_only_downwards() -> None:
    graph = grimp.build_graph("daemon", include_external_packages=False)
    rank = {module: n for n, layer in enumerate(LAYERS) for module in layer}
    violations = []
    for module, level in rank.items():
        for imported in graph.find_modules_directly_imported_by(module):
            if imported in rank and rank[imported] >= level and imported != module:
                violations.append(f"{module} imports {imported}")
    assert violations == [], violations


def test_store_has_no_policy_imports() -> None:
    graph = grimp.build_graph("daemon", include_external_packages=False)
    below_store = graph.find_upstream_modules("daemon.library.store")
    assert not below_store & {"daemon.library.selection", "daemon.library.review", "daemon.library.catalog",
                              "daemon.planning", "daemon.jobs"}
