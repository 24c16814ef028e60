"""What a config file may not do: run code, or write outside the run's own directory.

A Hydra config is data, but some of its keys are code: ``_target_`` (Hydra instantiates the
object it names), ``hydra.callbacks`` (objects Hydra builds and calls around the run),
``common.user_dir`` (a directory imported as a package), the ``class``, ``()`` and ``.`` keys
and the ``ext://`` / ``cfg://`` values of ``hydra.job_logging`` / ``hydra.hydra_logging``
(Python's ``logging.config`` imports and builds them), ``pkg://`` and ``structured://`` entries
of ``hydra.searchpath`` (imported to be searched), the shell lines of ``hydra.launcher.setup``,
the Optuna sweeper's ``custom_search_space`` and the variables of ``hydra.job.env_set`` that
make a child process load code (``PYTHONPATH``, ``LD_PRELOAD``, ...). And some keys are paths
the run writes: the log files, ``hydra.output_subdir`` (``config.yaml`` and two more files are
overwritten there), the run and sweep directories.

The rule, one for both: what a config FILE names is refused unless the command line says
:data:`ALLOW_FLAG`, or names it itself (``common.user_dir=DIR``, ``hydra.run.dir=DIR``, ...:
the user's own choice). Hydra's own plugins pass (launchers and sweepers from
``hydra_plugins``, their samplers and pruners, Hydra's core plugins), as do the standard
logging handlers and formatters writing to ``stdout``/``stderr`` or to a file inside the run's
directory. A path is judged after interpolation (``${hydra.runtime.output_dir}`` is the real run
directory) and :func:`os.path.realpath` (symlinks followed, ``..`` collapsed), so
``${hydra.runtime.output_dir}/../../victim`` is outside.

:func:`check_yaml_size` refuses a YAML document whose aliases expand to too many nodes (a
"billion laughs" file would otherwise exhaust memory during composition).
"""
import copy
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from omegaconf import DictConfig, OmegaConf

from fairseq.errors import ConfigError

__all__ = ["ALLOW_FLAG", "MAX_YAML_NODES", "check_config_code", "check_override_code", "check_searchpath",
           "check_user_dir",
           "check_yaml_size", "command_line_keys"]

#: the command-line flag that allows code (and paths outside the run) in config files
ALLOW_FLAG = "--allow-config-code"
#: the most nodes a YAML document may expand to (aliases counted at every use)
MAX_YAML_NODES = 200_000

# the modules whose objects a config may name without the flag: Hydra's plugins and their parts
_SAFE_TARGETS = ("hydra._internal.core_plugins.", "hydra_plugins.", "optuna.samplers.", "optuna.pruners.")
_SAFE_LOGGING_CLASSES = {"logging.StreamHandler", "logging.FileHandler", "logging.NullHandler",
                         "logging.Formatter", "logging.handlers.RotatingFileHandler",
                         "logging.handlers.WatchedFileHandler"}
_SAFE_FACTORIES = ("colorlog.ColoredFormatter",)  # hydra_colorlog's formatter
_SAFE_STREAMS = {"ext://sys.stdout", "ext://sys.stderr"}
_LOGGING_NODES = ("job_logging", "hydra_logging")
# config sources Hydra imports a module to search (file:// only reads a directory)
_IMPORTING_SOURCES = ("pkg://", "structured://")
# environment variables that make a child process (a spawned worker, a compiler) load other code
_CODE_ENV_PREFIXES = ("LD_", "DYLD_")
_CODE_ENV = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONEXECUTABLE",
             "PYTHONWARNINGS", "PYTHONINSPECT", "PYTHONPLATLIBDIR", "PATH", "BASH_ENV", "ENV"}
# the files Hydra writes into hydra.output_subdir, truncating what was there
_SAVED_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def command_line_keys(overrides: Sequence[str]) -> Set[str]:
    """The keys (and ``group`` choices) the command line's ``overrides`` set, ``+``/``~`` removed."""
    keys = set()
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+~").strip()
        if key:
            keys.add(key.replace("/", "."))
    return keys


def _on_command_line(key: str, keys: Set[str]) -> bool:
    """Whether ``key`` (or a node above it) was given on the command line."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in keys for i in range(1, len(parts) + 1))


def _items(node: Any, path: str) -> Iterator[Tuple[str, str, Any]]:
    """``(path, key, value)`` of every mapping entry under ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, str(key), value
            yield from _items(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _items(value, f"{path}[{i}]")


def _logging_refusals(node: Any, path: str) -> List[str]:
    """What in one logging config (``dictConfig`` form) would import or build code."""
    found = []
    for parent, key, value in _items(node, path):
        where = f"{parent}.{key}"
        if key == "()" and str(value) not in _SAFE_FACTORIES:
            found.append(f"{where}={value}")
        elif key == "class" and str(value) not in _SAFE_LOGGING_CLASSES:
            found.append(f"{where}={value}")
        elif key == ".":  # attributes set on the built object (a handler's baseFilename, ...)
            found.append(f"{where}={value}")
        elif isinstance(value, str) and "ext://" in value and not (key == "stream" and value in _SAFE_STREAMS):
            found.append(f"{where}={value} (only ext://sys.stdout and ext://sys.stderr are allowed)")
        elif isinstance(value, str) and "cfg://" in value:
            found.append(f"{where}={value}")
    return found


def _refusals(job: Any, hydra: Any, keys: Set[str]) -> List[str]:
    found = []
    for path, key, value in _items(job, ""):
        if key == "_target_":
            found.append(f"{path}._target_={value}")
    user_dir = (job.get("common") or {}).get("user_dir") if isinstance(job.get("common"), dict) else None
    if user_dir and not _on_command_line("common.user_dir", keys):
        found.append(f"common.user_dir={user_dir} (set in a config file; to import it, pass "
                     f"common.user_dir={user_dir} on the command line)")
    if hydra is None:
        return found
    if hydra.get("callbacks"):
        found.append(f"hydra.callbacks ({', '.join(map(str, hydra['callbacks']))})")
    for path, key, value in _items({k: v for k, v in hydra.items() if k != "callbacks"}, "hydra"):
        if key == "_target_" and not str(value).startswith(_SAFE_TARGETS):
            found.append(f"{path}._target_={value}")
    for name in _LOGGING_NODES:
        found += _logging_refusals(hydra.get(name), f"hydra.{name}")
    for i, entry in enumerate(hydra.get("searchpath") or []):
        if str(entry).startswith(_IMPORTING_SOURCES):
            found.append(f"hydra.searchpath[{i}]={entry} (imports a module; file:// entries are allowed)")
    launcher = hydra.get("launcher") or {}
    if isinstance(launcher, dict) and launcher.get("setup"):
        found.append(f"hydra.launcher.setup={launcher['setup']} (shell commands)")
    sweeper = hydra.get("sweeper") or {}
    if isinstance(sweeper, dict) and sweeper.get("custom_search_space"):
        found.append(f"hydra.sweeper.custom_search_space={sweeper['custom_search_space']}")
    env = (hydra.get("job") or {}).get("env_set") or {}
    for name in env if isinstance(env, dict) else ():
        if str(name) in _CODE_ENV or str(name).startswith(_CODE_ENV_PREFIXES):
            found.append(f"hydra.job.env_set.{name}={env[name]} (makes a child process load other code)")
    return found


def _refuse(found: List[str], where: str, what: str, fix: str) -> None:
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(f"{found[0]}{more}: {where} would {what}, which a config file may not do by "
                          f"default; {fix}, or pass {ALLOW_FLAG} if you trust every YAML file of this run")


def check_user_dir(user_dir: Optional[str], overrides: Sequence[str], allowed: bool, where: str) -> None:
    """Refuse a ``common.user_dir`` that only a config file names (before it is imported), unless
    ``allowed`` or the command line's ``overrides`` name it.

    Raises:
        ConfigError: naming the key, the file and both ways to allow it.
    """
    if not user_dir or allowed or _on_command_line("common.user_dir", command_line_keys(overrides)):
        return
    raise ConfigError(f"common.user_dir={user_dir}: set in {where}, it would import that directory's "
                      "code, which a config file may not do by default; name it on the command line "
                      f"(common.user_dir={user_dir}), or pass {ALLOW_FLAG} if you trust every YAML file "
                      "of this run")


def check_override_code(overrides: Sequence[str], allowed: bool) -> None:
    """Refuse a command-line override that makes Hydra build and call an object around the run
    (``hydra.callbacks...``), as the same key in a file is refused, before Hydra parses it.

    Raises:
        ConfigError: naming the override and the flag.
    """
    if allowed:
        return
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+~").replace("/", ".")
        if key == "hydra.callbacks" or key.startswith("hydra.callbacks."):
            raise ConfigError(f"{text}: a Hydra callback is code called around the run, refused by "
                              f"default; remove it, or pass {ALLOW_FLAG} to allow it")


def check_config_code(cfg: DictConfig, allowed: bool, where: str, overrides: Sequence[str] = (),
                      multirun: bool = False, check_paths: bool = True) -> None:
    """Refuse what in ``cfg`` (composed with its ``hydra`` node) would run code or write
    outside the run's directory, unless ``allowed`` (:data:`ALLOW_FLAG` was given) or the
    command line's ``overrides`` name it.

    Args:
        cfg: the composed config, with or without its ``hydra`` node.
        allowed: the command line allows code and paths from config files.
        where: the config's origin, for the message ("the config in conf/").
        overrides: the command line's overrides (their keys are the user's own choice).
        multirun: the run is a sweep (its directory is ``hydra.sweep.dir``).
        check_paths: also check the paths the Hydra app writes (an evaluation command runs no
            Hydra app and writes none of them).

    Raises:
        ConfigError: naming the first such key, where it came from and both ways to allow it.
    """
    if allowed:
        return
    keys = command_line_keys(overrides)
    container = OmegaConf.to_container(cfg, resolve=False)
    hydra = container.pop("hydra", None)
    _refuse(_refusals(container, hydra, keys), where, "run code", "remove it")
    if hydra is None:
        return
    resolved = _resolved_hydra(cfg, multirun)
    # interpolation can assemble a value (`ext:` + `//os.system`): the resolved one is checked too
    found = [f for name in _LOGGING_NODES for f in _logging_refusals(resolved.get(name), f"hydra.{name}")]
    _refuse(found, where, "run code", "remove it")
    if check_paths:
        _refuse(_path_refusals(resolved, keys, multirun), where,
                "write outside the run's own directory or over files it did not make",
                "set the path on the command line instead")


def _resolve(job: DictConfig, key: str) -> Any:
    """The value of ``key`` in ``job`` with every interpolation resolved (a container as plain data)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        node = OmegaConf.select(job, key, throw_on_missing=False)
        if OmegaConf.is_config(node):
            return OmegaConf.to_container(node, resolve=True)
        return node
    except OmegaConfBaseException as e:
        raise ConfigError(f"{key}: cannot be resolved ({str(e).splitlines()[0]}); fix the interpolation "
                          "in the config file or set the key on the command line") from None


def _resolved_hydra(cfg: DictConfig, multirun: bool) -> Dict[str, Any]:
    """The parts of ``cfg.hydra`` that run code or name paths, resolved as the Hydra app will:
    the first job's number and output directory filled in, ``${hydra:...}`` answered."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    job = copy.deepcopy(cfg)
    holder = HydraConfig.instance()
    saved = holder.cfg

    def publish() -> None:  # what ${hydra:...} reads, as Hydra's run_job sets it
        holder.cfg = OmegaConf.masked_copy(job, "hydra")
        holder.cfg.hydra._set_parent(job)

    try:
        with read_write(job), open_dict(job):
            for key, value in (("num", 0), ("id", "0")):
                if OmegaConf.is_missing(job.hydra.job, key):
                    job.hydra.job[key] = value
        publish()
        if multirun:
            base = str(_resolve(job, "hydra.sweep.dir"))
            subdir = _resolve(job, "hydra.sweep.subdir")
            output_dir = os.path.join(base, str(subdir))
        else:
            base = output_dir = str(_resolve(job, "hydra.run.dir"))
            subdir = None
        with read_write(job), open_dict(job):
            job.hydra.runtime.output_dir = os.path.abspath(output_dir)
        publish()
        launcher = _resolve(job, "hydra.launcher")
        return {"base": os.path.abspath(base), "output_dir": os.path.abspath(output_dir), "subdir": subdir,
                "output_subdir": _resolve(job, "hydra.output_subdir"),
                "chdir": bool(_resolve(job, "hydra.job.chdir")),
                "submitit_folder": launcher.get("submitit_folder") if isinstance(launcher, dict) else None,
                **{name: _resolve(job, f"hydra.{name}") for name in _LOGGING_NODES}}
    finally:
        holder.cfg = saved


def _inside(path: str, directory: str) -> bool:
    """Whether ``path``, symlinks followed and ``..`` collapsed, lies in ``directory`` (or is it)."""
    real, top = os.path.realpath(path), os.path.realpath(directory)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _previous_run(directory: str, output_subdir: Optional[str], multirun: bool) -> bool:
    """Whether ``directory`` is one Hydra made for an earlier run (its own files are there)."""
    marks = ["multirun.yaml"] if multirun else [os.path.join(".hydra", "hydra.yaml")]
    if output_subdir and not multirun:
        marks.append(os.path.join(output_subdir, "hydra.yaml"))
    return any(os.path.isfile(os.path.join(directory, mark)) for mark in marks)


def _written_by_a_peer_rank(path: str) -> bool:
    """Whether ``path`` is another rank's write in this torchrun job. Every rank runs the Hydra app
    into the same run directory, and Hydra writes ``config.yaml`` before ``hydra.yaml``: a peer
    that started with this process may have written the first and not yet the second. A file
    written since this process started (a minute of slack: the ranks start together, and
    importing torch alone takes longer) is the job's own; outside torchrun, never."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return False
    try:
        started = os.stat(f"/proc/{os.getpid()}").st_ctime  # the process's start (Linux)
        return os.path.getmtime(path) >= started - 60.0
    except OSError:
        return False


def _path_refusals(resolved: Dict[str, Any], keys: Set[str], multirun: bool) -> List[str]:
    """The paths a config file makes the Hydra app write outside the run's own directory, or
    over files that are not a previous run's."""
    found = []
    base, output_dir = resolved["base"], resolved["output_dir"]
    dir_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    output_subdir = resolved["output_subdir"]
    if os.path.lexists(base) and not os.path.isdir(base):
        found.append(f"{dir_key}={base} (exists and is not a directory)")
    elif (not _on_command_line(dir_key, keys) and os.path.isdir(base) and os.listdir(base)
          and os.path.realpath(base) != os.path.realpath(os.getcwd())
          and not _previous_run(base, output_subdir, multirun)):
        # the launch directory itself (fairseq 0.12's `hydra.run.dir: .`) is the user's; its files
        # are protected one by one below
        found.append(f"{dir_key}={base} (an existing directory with files that no earlier run wrote)")
    if multirun and not _on_command_line("hydra.sweep.subdir", keys) and not _inside(output_dir, base):
        found.append(f"hydra.sweep.subdir={resolved['subdir']} (a job directory outside {base})")
    if output_subdir is not None and not _on_command_line("hydra.output_subdir", keys):
        saved = os.path.join(output_dir, str(output_subdir))
        if not _inside(saved, output_dir):
            found.append(f"hydra.output_subdir={output_subdir} (resolves to {os.path.realpath(saved)}, "
                         f"outside the run's directory {output_dir})")
        elif not os.path.isfile(os.path.join(saved, "hydra.yaml")):
            for name in _SAVED_FILES:  # Hydra truncates these: only a previous run's may be there
                target = os.path.join(saved, name)
                if os.path.lexists(target) and not _written_by_a_peer_rank(target):
                    found.append(f"hydra.output_subdir={output_subdir} (would overwrite {target}, "
                                 "which no earlier run wrote)")
                    break
    folder = resolved["submitit_folder"]
    if folder and not _on_command_line("hydra.launcher.submitit_folder", keys) and not _inside(str(folder), base):
        found.append(f"hydra.launcher.submitit_folder={folder} (outside {base})")
    for name in _LOGGING_NODES:
        handlers = (resolved.get(name) or {}).get("handlers") or {}
        for handler, spec in handlers.items() if isinstance(handlers, dict) else ():
            key = f"hydra.{name}.handlers.{handler}.filename"
            if not isinstance(spec, dict) or "filename" not in spec or _on_command_line(key, keys):
                continue
            filename = str(spec["filename"])
            path = os.path.join(output_dir if resolved["chdir"] else os.getcwd(), filename)
            if not _inside(path, output_dir):
                found.append(f"{key}={filename} (resolves to {os.path.realpath(path)}, outside the run's "
                             f"directory {output_dir})")
            elif os.path.isfile(path) and not path.endswith(".log"):
                found.append(f"{key}={filename} (would write into the existing file {path}, not a log)")
    return found


def check_searchpath(config_dir: Optional[str], config_name: str, allowed: bool) -> None:
    """Refuse a ``hydra.searchpath`` entry of the primary YAML file (the only one Hydra reads it
    from) that would import a module (``pkg://``, ``structured://``), or that is built by
    interpolation, unless ``allowed``. Hydra imports such a module while it composes, so this
    reads the file itself, before any composition.

    Raises:
        ConfigError: naming the file, the entry and the flag.
    """
    import yaml

    if allowed or not config_dir:
        return
    path = Path(config_dir) / f"{config_name}.yaml"
    try:
        node = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return  # composition reports a malformed or unreadable file with its own message
    hydra = node.get("hydra") if isinstance(node, dict) else None
    entries = hydra.get("searchpath") if isinstance(hydra, dict) else None
    for i, entry in enumerate(entries if isinstance(entries, list) else [entries] if entries else []):
        text = str(entry)
        if text.startswith(_IMPORTING_SOURCES) or "${" in text:
            raise ConfigError(f"hydra.searchpath[{i}]={text} in {path}: it would run code (Hydra imports "
                              "the module to search it), which a config file may not do by default; use "
                              f"a file:// directory, or pass {ALLOW_FLAG} if you trust every YAML file of "
                              "this run")


def _expanded_size(node: Any, sizes: dict, limit: int) -> int:
    """The number of nodes ``node`` becomes once every alias is expanded (stops past ``limit``)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    sizes[key] = 1  # a recursive alias counts once here; the YAML loader refuses it anyway
    total = 1
    value = getattr(node, "value", None)
    if isinstance(value, list):
        for item in value:
            children = item if isinstance(item, tuple) else (item,)
            for child in children:
                total += _expanded_size(child, sizes, limit)
                if total > limit:
                    break
    sizes[key] = total
    return total


def check_yaml_size(config_dir: Optional[str], limit: int = MAX_YAML_NODES) -> None:
    """Refuse a YAML file under ``config_dir`` whose aliases expand to more than ``limit`` nodes.

    Raises:
        ConfigError: naming the file and its expanded size.
    """
    import yaml

    if not config_dir or not os.path.isdir(config_dir):
        return
    for path in sorted(Path(config_dir).rglob("*.yaml")) + sorted(Path(config_dir).rglob("*.yml")):
        try:
            with open(path, "rb") as f:
                documents = list(yaml.compose_all(f, Loader=yaml.SafeLoader))
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            continue  # composition reports a malformed or unreadable file with its own message
        for document in documents:
            size = _expanded_size(document, {}, limit) if document is not None else 0
            if size > limit:
                raise ConfigError(f"{path}: its aliases expand to more than {limit:,} nodes; a config "
                                  "this large is refused (a YAML alias bomb?): write the values out")
