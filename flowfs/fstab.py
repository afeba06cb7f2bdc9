"""``flowfs SOURCE MOUNTPOINT -o OPTIONS``: how mount(8) runs flowfs for /etc/fstab.

A line of type ``fuse.flowfs`` makes mount(8) run ``mount.fuse3``, which runs
``flowfs SOURCE MOUNTPOINT -o rw,api_url=…,uid=…,dev,suid`` (having taken out what is its
own: ``noauto``, ``_netdev``, ``nofail``, ``x-systemd.*``, ``setuid=``). :func:`mount_argv`
turns that into the ``flowfs mount`` command line, so an fstab mount takes the one path
every mount takes: the same checks, a daemon, and a return only once the mount answers.

Every setting of :data:`flowfs.settings.OPTIONS` is a mount option under its config.toml
key (a row added there is an option here with no change); a boolean may stand alone
(``allow_other``). The generic options of mount(8) are accepted and change nothing: flowfs
is read-only whatever ``rw`` says, and FUSE mounts are ``nodev,nosuid`` for users anyway.
A value holding commas is written in double quotes: ``log_level="debug,httpx=info"``.
SOURCE is free text (``flow``), or the API URL when it is one.
"""

from __future__ import annotations

from flowfs.errors import ConfigError
from flowfs.settings import BY_KEY

# mount(8)'s generic options, and those mount.fuse3 adds or passes on.
GENERIC = frozenset({
    "rw", "ro", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "auto", "noauto",
    "user", "nouser", "users", "owner", "group", "defaults", "_netdev", "nofail", "async",
    "sync", "dirsync", "atime", "noatime", "relatime", "norelatime", "strictatime",
    "nostrictatime", "diratime", "nodiratime", "lazytime", "nolazytime", "silent", "loud",
    "iversion", "noiversion", "mand", "nomand",
})
GENERIC_PREFIXES = ("x-", "comment=", "context=", "fscontext=", "defcontext=", "rootcontext=")
POSITIONAL = ("mountpoint",)  # a setting given as MOUNTPOINT, never as an option


def split_options(text: str) -> list[str]:
    """``a=1,b="x,y",c`` → ``['a=1', 'b=x,y', 'c']``: commas inside double quotes stay."""
    items, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append(current)
            current = ""
        else:
            current += char
    if quoted:
        raise ConfigError(f"mount options: unbalanced double quote in {text!r}")
    items.append(current)
    return [item for item in items if item]


def option_flags(item: str) -> list[str]:
    """One ``name[=value]`` mount option as ``flowfs mount`` flags ([] for a generic one)."""
    name, has_value, value = item.partition("=")
    if item in GENERIC or item.startswith(GENERIC_PREFIXES):
        return []
    option = BY_KEY.get(name)
    if option is None or name in POSITIONAL:
        known = ", ".join(key for key in BY_KEY if key not in POSITIONAL)
        raise ConfigError(f"unknown mount option {name!r} (known: {known})")
    if option.boolean:
        try:
            on = option.parse(value) if has_value else True
        except ValueError as exc:
            raise ConfigError(f"mount option {name}: {exc}") from None
        return [option.flag if on else "--no-" + option.flag[2:]]
    if not has_value:
        raise ConfigError(f"mount option {name} needs a value: {name}=…")
    return [option.flag, value]


def mount_argv(argv: list[str]) -> list[str]:
    """``SOURCE MOUNTPOINT [-o OPTIONS]…`` (mount.fuse3's call) → ``mount MOUNTPOINT …``."""
    positional: list[str] = []
    flags: list[str] = []
    given = False  # mount.fuse3 always passes -o (rw at least): without it, a mistyped command
    rest = iter(argv)
    for arg in rest:
        if arg == "-o":
            text = next(rest, None)
            if text is None:
                raise ConfigError("-o needs mount options")
        elif arg.startswith("-o"):
            text = arg[2:]
        elif arg.startswith("-"):
            raise ConfigError(f"unexpected {arg!r}: the form is flowfs SOURCE MOUNTPOINT -o "
                              "OPTIONS, or flowfs COMMAND (see flowfs --help)")
        else:
            positional.append(arg)
            continue
        given = True
        for item in split_options(text):
            flags += option_flags(item)
    if not given:
        raise ConfigError(f"unknown command {argv[0]!r} (see flowfs --help)")
    if len(positional) != 2:
        raise ConfigError("the form is flowfs SOURCE MOUNTPOINT -o OPTIONS (as mount(8) "
                          "runs it), or flowfs COMMAND (see flowfs --help)")
    source, mountpoint = positional
    if source.startswith(("http://", "https://")) and "--api-url" not in flags:
        flags = ["--api-url", source, *flags]
    return ["mount", mountpoint, *flags]
