"""Command groups other packages add (the ``cofounder.commands`` entry points), loaded only to run.

``cofounder --help`` lists every group with its one-line help, but loading a group imports its
package (the gateway's: FastAPI, SQLAlchemy, ...; seconds of CPU). So each entry point is stood in
for by an :class:`EntryPointGroup` carrying its name and help, which loads the real group only
when a command line reaches it. The help is read from the source of the module the entry point
names, without importing it, when it is a plain ``NAME = typer.Typer(help="...")``; otherwise the
group is loaded at once (correct, only slower).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from typer import _click as click

__all__ = ["COMMAND_ENTRY_POINTS", "CofounderGroup", "EntryPointGroup", "static_help"]

#: Services add command groups under this entry-point group (the gateway: token, seed).
COMMAND_ENTRY_POINTS: Final = "cofounder.commands"

#: ``typer.Typer(...)`` arguments that leave the line ``--help`` shows for the group unchanged.
_LISTING_NEUTRAL: Final = frozenset({"help", "name", "no_args_is_help"})


class EntryPointGroup(TyperGroup):
    """Stands for an entry point's command group in listings; loads the group to parse and run."""

    def __init__(self, entry_point: EntryPoint, *, help_text: str, root: TyperGroup) -> None:
        super().__init__(
            name=entry_point.name,
            help=help_text,
            rich_markup_mode=root.rich_markup_mode,
            suggest_commands=root.suggest_commands,
        )
        self.entry_point = entry_point
        self._root = root
        self._loaded: TyperGroup | None = None

    def load(self) -> TyperGroup:
        """The real group, as ``app.add_typer(<the entry point>, name=<its name>)`` makes it."""
        if self._loaded is None:
            self._loaded = load_group(self.entry_point, self._root)
        return self._loaded

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self.load().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.load().get_command(ctx, cmd_name)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # The context (and so its help, parsing and invocation) is the real group's.
        return self.load().make_context(info_name, args, parent=parent, **extra)


def load_group(entry_point: EntryPoint, root: TyperGroup) -> TyperGroup:
    """Import the entry point's Typer app and turn it into the group ``root`` would mount."""
    sub_app = entry_point.load()
    if not isinstance(sub_app, typer.Typer):
        raise TypeError(
            f"entry point {entry_point.name!r} ({entry_point.value}) is not a typer.Typer"
        )
    holder = typer.Typer(
        rich_markup_mode=root.rich_markup_mode, suggest_commands=root.suggest_commands
    )
    holder.add_typer(sub_app, name=entry_point.name)
    group = typer.main.get_group(holder).commands[entry_point.name]
    assert isinstance(group, TyperGroup)
    return group


class CofounderGroup(TyperGroup):
    """The root ``cofounder`` group: its own commands, then every ``cofounder.commands`` entry
    point's group (in entry-point order), each loaded only when used."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for entry_point in entry_points(group=COMMAND_ENTRY_POINTS):
            help_text = static_help(entry_point)
            self.commands[entry_point.name] = (
                load_group(entry_point, self)
                if help_text is None
                else EntryPointGroup(entry_point, help_text=help_text, root=self)
            )


def static_help(entry_point: EntryPoint) -> str | None:
    """The help Typer would show for the entry point's group, read from its module's source
    (``NAME = typer.Typer(help="...")`` once at the top level, no callback); else None."""
    module, _, attr = (part.strip() for part in entry_point.value.partition(":"))
    source = _module_source(module)
    try:
        tree = ast.parse(source.read_text(encoding="utf-8")) if source else None
    except (OSError, SyntaxError, ValueError):
        tree = None
    call = _typer_call(tree, attr) if tree and attr.isidentifier() else None
    if tree is None or call is None or _has_callback(tree, attr):
        return None
    help_node = next((kw.value for kw in call.keywords if kw.arg == "help"), None)
    if not isinstance(help_node, ast.Constant) or not isinstance(help_node.value, str):
        return None
    return inspect.cleandoc(help_node.value)


def _typer_call(tree: ast.Module, name: str) -> ast.Call | None:
    """The ``typer.Typer(...)`` call assigned to ``name``, when it is its only top-level
    assignment and passes nothing that changes the group's line in a listing."""
    values = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and node.value is not None
        and any(
            isinstance(target, ast.Name) and target.id == name
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        )
    ]
    if len(values) != 1 or not isinstance(call := values[0], ast.Call):
        return None
    func = call.func
    is_typer = (isinstance(func, ast.Name) and func.id == "Typer") or (
        isinstance(func, ast.Attribute)
        and func.attr == "Typer"
        and isinstance(func.value, ast.Name)
        and func.value.id == "typer"
    )
    keywords = {kw.arg for kw in call.keywords}
    neutral = None not in keywords and keywords <= _LISTING_NEUTRAL
    return call if is_typer and not call.args and neutral else None


def _has_callback(tree: ast.Module, name: str) -> bool:
    """Whether the module mentions ``name.callback`` (a callback can give the group its help)."""
    return any(
        isinstance(node, ast.Attribute)
        and node.attr == "callback"
        and isinstance(node.value, ast.Name)
        and node.value.id == name
        for node in ast.walk(tree)
    )


def _module_source(module: str) -> Path | None:
    """The ``.py`` file of a module, found without importing it (nor its packages)."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    folders = [Path(each) for each in spec.submodule_search_locations or ()]
    *packages, name = rest
    for part in packages:  # regular packages only, as the import system would find them
        folders = [f / part for f in folders if (f / part / "__init__.py").is_file()][:1]
    candidates = [c for f in folders for c in (f / name / "__init__.py", f / f"{name}.py")]
    return next((c for c in candidates if c.is_file()), None)
