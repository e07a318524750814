"""``asym-train``'s command line: Hydra parses, composes and validates it; this module turns Hydra's and OmegaConf's
exceptions into one ``error:`` line that names the override and, where there is one, the remedy.

Nothing here re-implements Hydra's grammar or composition: ``session`` sets Hydra up exactly as ``hydra.main``
does, ``compose`` asks Hydra's config loader for the config ``hydra.main`` will compose, ``parse`` is Hydra's
override parser, and ``explain`` reads the exception Hydra raised (its type, its OmegaConf cause and that cause's
key and parent node). Torch-free: a bad override is one line before torch is imported.
"""
from __future__ import annotations

import contextlib
import difflib
import os
import shlex
from typing import Any, Callable, Iterator, Optional, Sequence

PRIMARY = ("pkg://asym.conf", "config")   # asym-train's @hydra.main(config_path=…, config_name=…)
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"
SPECIAL = set("=,#()[]{}'\" \t:")         # a value holding one of these may need Hydra's quotes


class OverrideError(ValueError):
    """A bad command line, said in one line (``asym-train`` prints it as ``error: …`` and exits 2)."""


@contextlib.contextmanager
def session(config_path: Optional[str] = None, config_dir: Optional[str] = None,
            task_function: Optional[Callable] = None) -> Iterator[Any]:
    """Hydra set up as ``hydra.main`` sets it up for ``asym-train`` (``-cp``, ``-cd`` included); yields its
    config loader, and leaves no global Hydra state behind.

    ``hydra.main`` has no public "compose exactly what you would" call: these are the first steps of Hydra's
    ``_run_hydra`` (pinned by test_private_apis_we_rely_on_still_exist)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, \
        detect_calling_file_or_module_from_task_function
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import SearchPathException

    calling_file, calling_module = (detect_calling_file_or_module_from_task_function(task_function)
                                    if task_function is not None else (None, "asym.cli"))
    search_path = create_automatic_config_search_path(calling_file, calling_module, config_path or PRIMARY[0])
    if config_dir is not None:
        path = os.path.abspath(config_dir)
        if not os.path.isdir(path):
            raise OverrideError(f"--config-dir {config_dir}: no such directory")
        search_path.prepend(provider="command-line", path=f"file://{path}", anchor=SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()
    try:
        try:
            hydra = Hydra.create_main_hydra2(task_name="asym", config_search_path=search_path)
        except SearchPathException as e:
            raise OverrideError(str(e).splitlines()[0]) from None
        yield hydra.config_loader
    finally:
        GlobalHydra.instance().clear()


def compose(loader, overrides: Sequence[str], multirun: bool = False, config_name: Optional[str] = None):
    """The config ``hydra.main`` composes from these overrides (a sweep: its primary config, which Hydra composes
    without the swept values); OverrideError with one line if Hydra cannot compose it."""
    from hydra.types import RunMode
    check_forms(parse(overrides))
    try:
        return loader.load_configuration(config_name or PRIMARY[1], list(overrides),
                                         RunMode.MULTIRUN if multirun else RunMode.RUN)
    except Exception as e:
        raise OverrideError(explain(e, overrides)) from None


def parse(overrides: Sequence[str], loader=None) -> list:
    """Hydra's parse of the overrides (``loader`` lets ``glob()`` list a config group); OverrideError if one does
    not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    try:
        return OverridesParser.create(config_loader=loader).parse_overrides(list(overrides))
    except Exception as e:
        raise OverrideError(explain(e, overrides)) from None


def check_forms(parsed: Sequence) -> None:
    """Forms Hydra parses but asym-train cannot run: ``interval()`` (a continuous range, not a grid)."""
    for o in parsed:
        if o.is_sweep_override() and o.is_interval_sweep():
            raise OverrideError(f"{o.input_line} is a continuous interval, not a grid: asym-train -m runs the values "
                                f"it lists — a,b,c, range(start,stop,step) or choice(a,b,c) — e.g. "
                                f"{o.get_key_element()}=0.1,0.3,1 (interval() is for optimizing sweepers)")


def explain(e: BaseException, overrides: Sequence[str] = ()) -> str:
    """One line for an exception Hydra or OmegaConf raised over these overrides: what is wrong, naming the
    override, and what to write instead where there is a remedy."""
    from hydra.errors import (ConfigCompositionException, HydraException, MissingConfigException,
                              OverrideParseException)
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    cause = e.__cause__
    if isinstance(e, OverrideParseException):
        return _unparsable(e.override, text)
    if isinstance(e, MissingConfigException) and e.missing_cfg_file:
        group, _, name = e.missing_cfg_file.rpartition("/")
        if group:
            options = group_options(e.options or [])
            return f"no {group} config '{name}'; choose from {', '.join(options)}" + _did_you_mean(name, options)
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and first.startswith("Could not override"):
        return unknown_key(cause.full_key, cause.parent_node)
    if isinstance(cause, ValidationError) and cause.full_key:
        return bad_value(cause.full_key, cause.value if cause.value is not None else _value_of(cause.full_key, overrides),
                         cause.msg.splitlines()[0])
    if first.startswith("Could not append to config. An item is already at"):
        key = _quoted(first)
        return f"'+{key}' adds a key the config already has; write {key}=… (or ++{key}=…: add or override)"
    if first.startswith("Ambiguous value for argument") or first.endswith("requires --multirun"):
        line = _quoted(first)
        key, _, value = line.partition("=")
        return (f"{line} is a sweep (several values): add -m to run each; for one value that holds a comma "
                f"quote it, {_shell_quoted(key, value)}; for a list write {key}=[{value}]")
    if first.startswith("Could not override") and "No match in the defaults list" in text:
        group = _quoted(first)
        line = next((o for o in overrides if o.split("=")[0].lstrip("+~") == group), f"{group}=…")
        return f"{line}: no '{group}' in the defaults list to override: add it with +{line.lstrip('+~')}"
    if first.startswith("Could not delete"):
        return f"{first.rstrip('.')}; only a key or config group the config has can be deleted with ~"
    if first.startswith("Multiple values for"):
        group = first.split()[3].rstrip(".")
        return f"{group} is chosen twice: choose it once ({group}=…)"
    if first.startswith("Error merging override ") and isinstance(cause, OmegaConfBaseException):
        line = first[len("Error merging override "):]
        reason = str(cause).strip().splitlines()[0]
        if line.startswith("~") and "does not support deletion" in reason:
            key = line[1:].split("=")[0]
            return f"{line}: {reason}: set it instead ({key}=…)"
        return f"{line}: {reason}"
    if isinstance(e, OmegaConfBaseException) or isinstance(cause, OmegaConfBaseException):
        inner = e if isinstance(e, OmegaConfBaseException) else cause
        return str(inner).strip().splitlines()[0]
    if isinstance(e, (HydraException, ConfigCompositionException, ValueError)):
        return first
    return f"{type(e).__name__}: {first}"


def unknown_key(full_key: str, parent, added: bool = False) -> str:
    """``modle=SGD``: the key, the closest key the config has (``parent``: the node it is not in), and the keys
    there are. ``added``: ``+key``/``++key`` (or a config file) put it in the config, where no run reads it."""
    prefix, _, key = full_key.rpartition(".")
    keys = [k for k in (parent.keys() if parent is not None else []) if k != "hydra"]
    nested = {k for k in keys if _is_node(parent, k)}
    hint = difflib.get_close_matches(key, keys, n=1)
    where = (f"; keys: {', '.join(k for k in keys if k not in nested)}"
             + "".join(f", {k}.*" for k in keys if k in nested)) if not prefix else \
        (f"; {prefix} has {', '.join(keys)}" if keys else f"; {prefix} has no keys")
    return (f"unknown config key '{full_key}'" + (f" (did you mean '{_join(prefix, hint[0])}'?)" if hint else "")
            + (" (added by +/++ or a config file; no run reads it)" if added else "") + where)


def bad_value(full_key: str, value: Any, reason: str) -> str:
    """``lr_mult=ten``: the key, and the rule of its value (the key's own check where one exists, else OmegaConf's)."""
    rule = VALUE_RULES.get(full_key)
    if rule is not None:
        try:
            rule()(value)
        except ValueError as e:
            reason = str(e)
    return f"bad value for {full_key}: {reason}"


def _check_runs_per_task():
    from asym.launcher.slurm import check_runs_per_task  # the launcher owns its rule
    return check_runs_per_task


def _check_seeds():
    from asym.config import check_seeds
    return check_seeds


# keys whose rule is more than a type: their owner's check says what a value must be
VALUE_RULES: dict[str, Callable[[], Callable[[Any], Any]]] = {
    "hydra.launcher.runs_per_task": _check_runs_per_task,
    "seeds": _check_seeds,
}


def group_options(options: Sequence[str]) -> list[str]:
    return sorted(o for o in options if o != "schema")


def _unparsable(line: str, text: str) -> str:
    """An override Hydra's grammar rejects: Hydra's reason, and the quoting that makes it one value."""
    reason = next((ln.strip() for ln in text.splitlines()
                   if ln.strip() and not ln.startswith(("See https", "Error parsing override")) and "^" not in ln
                   and not ln.startswith("LexerNoViableAltException")), "")
    if "LexerNoViableAltException" in text:
        bad = next((ln for ln in text.splitlines() if ln.strip() == "^"), None)
        reason = "a character the grammar does not allow here" if bad is None else reason
    key, eq, value = line.partition("=")
    remedy = ""
    if eq and key.strip() and not any(c in key for c in " =,'\"") and value and (SPECIAL & set(value)):
        remedy = f"; quote a value that holds = , # : ( ) [ ] {{ }} quotes or spaces: {_shell_quoted(key, value)}"
    elif not eq:
        remedy = "; an override is key=value (a value with spaces must be quoted)"
    return f"cannot parse override {line!r}" + (f" ({reason})" if reason else "") + remedy + f"; see {GRAMMAR}"


def _shell_quoted(key: str, value: str) -> str:
    """``key=value`` quoted for Hydra (one string value), then for the shell: ready to paste."""
    if '"' not in value and "\\" not in value:
        return shlex.quote(f'{key}="{value}"')
    if "'" not in value:
        return shlex.quote(f"{key}='{value}'")
    return shlex.quote(f'{key}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')


def _quoted(text: str) -> str:
    """The first '…'-quoted word of Hydra's message (its override or key)."""
    parts = text.split("'")
    return parts[1] if len(parts) > 2 else text


def _override_of(full_key: str, overrides: Sequence[str]) -> Optional[str]:
    return next((o for o in overrides if o.split("=")[0].lstrip("+~") == full_key), None)


def _value_of(full_key: str, overrides: Sequence[str]) -> Any:
    line = _override_of(full_key, overrides)
    return line.partition("=")[2] if line else None


def _is_node(parent, key: str) -> bool:
    from omegaconf import DictConfig
    try:
        return isinstance(parent._get_node(key), DictConfig)
    except Exception:
        return False


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _did_you_mean(name: str, options: Sequence[str]) -> str:
    hint = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""
