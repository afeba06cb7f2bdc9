"""`flowfs completion bash|zsh|fish`: completion scripts made from the argument parser.

Generated, not hand-written, so a new subcommand or flag is completed the day
it is added. Subcommands, flags and fixed choices complete as words; mount
points (for ``umount``, ``status``, ``refresh``) and job names (for
``downloads wait``) come from ``flowfs completion --words mounts|jobs`` at the
time of the TAB, which reads ``/proc/self/mountinfo`` and a mount's
``.downloads/`` with a deadline, so a hung mount cannot hang the shell.
zsh uses the bash script through zsh's own ``bashcompinit``.
"""

from __future__ import annotations

import argparse
import shlex

from flowfs.mounts import Hung, within

# (subcommand, action) -> the kind of words `flowfs completion --words KIND` prints
DYNAMIC = {("umount", ""): "mounts", ("status", ""): "mounts", ("refresh", ""): "mounts",
           ("downloads", "wait"): "jobs"}
SHELLS = ("bash", "zsh", "fish")
WORDS_TIMEOUT = 2.0


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(opt for action in parser._actions for opt in action.option_strings
                  if action.help != argparse.SUPPRESS)


def _names(parser: argparse.ArgumentParser) -> list[str]:
    """A parser's subcommands and the fixed choices of its arguments."""
    names = [str(c) for a in _positionals(parser) for c in (a.choices or ())]
    return sorted(names) + sorted(_subparsers(parser))


def _takes_files(parser: argparse.ArgumentParser) -> bool:
    """Whether a free-form argument (a path) may follow, here or in a subcommand."""
    return any(not a.choices for a in _positionals(parser)) or any(
        _takes_files(sub) for sub in _subparsers(parser).values())


# -- the words completed at the time of the TAB ------------------------------------------------

def words(kind: str, mount: str | None = None) -> list[str]:
    """Mount points of flowfs mounts, or the bulk jobs of the mount one is in (or ``mount``)."""
    from flowfs.errors import FlowError
    from flowfs.mounts import flowfs_mounts

    if kind == "mounts":
        return [str(m) for m in flowfs_mounts()]
    from flowfs.downloads_cli import find_mount

    try:
        where = find_mount(mount)
    except FlowError:
        return []
    def read() -> list[str]:
        return sorted(p.name[:-len(".status")] for p in (where / ".downloads").glob("*.status"))

    try:
        return within(read, WORDS_TIMEOUT, "flowfs-complete")
    except (Hung, OSError):
        return []


# -- bash (and zsh) -----------------------------------------------------------------------------

def bash_script(parser: argparse.ArgumentParser, *, zsh: bool = False) -> str:
    """The completion script for ``parser`` (source it from ~/.bashrc, or ~/.zshrc)."""
    prog = parser.prog
    func = "_" + "".join(c if c.isalnum() else "_" for c in prog)
    cases = []
    for name, sub in _subparsers(parser).items():
        flags, names = shlex.quote(" ".join(_flags(sub))), shlex.quote(" ".join(_names(sub)))
        files = "1" if _takes_files(sub) else ""
        cases.append(f"        {shlex.quote(name)}) flags={flags}; names={names}; files={files} ;;")
    nested = []  # `downloads wait`: the action's own flags and words
    for name, sub in _subparsers(parser).items():
        for act, act_parser in _subparsers(sub).items():
            act_flags = shlex.quote(" ".join(sorted(set(_flags(sub) + _flags(act_parser)))))
            act_names = shlex.quote(" ".join(_names(act_parser)))
            act_files = "1" if _takes_files(act_parser) else ""
            nested.append(f"        {shlex.quote(f'{name} {act}')}) flags={act_flags}; "
                          f"names={act_names}; files={act_files} ;;")
    nested += [f"        {shlex.quote(f'{cmd} {act}'.rstrip())}) dyn={kind} ;;"
               for (cmd, act), kind in DYNAMIC.items() if not act]
    dynamic = "\n".join(f"        {shlex.quote(f'{cmd} {act}')}) dyn={kind}; files='' ;;"
                        for (cmd, act), kind in DYNAMIC.items() if act)
    flags, names = shlex.quote(" ".join(_flags(parser))), shlex.quote(" ".join(_names(parser)))
    shell = "zsh" if zsh else "bash"
    if zsh:
        install = (f"# Install: {prog} completion zsh > ~/.{prog}-completion.zsh, and in "
                   f"~/.zshrc (after compinit):\n#   source ~/.{prog}-completion.zsh\n"
                   "autoload -U +X bashcompinit && bashcompinit\n")
        emulate = "    emulate -L ksh  # bash's 0-based arrays and word splitting\n"
    else:
        install = (f"# Install: {prog} completion bash > "
                   f"~/.local/share/bash-completion/completions/{prog}\n")
        emulate = ""
    return f"""\
# {shell} completion for {prog}; generated by '{prog} completion {shell}'.
{install}{func}() {{
{emulate}    local cur="${{COMP_WORDS[COMP_CWORD]}}" cmd="" act="" i flags names files dyn=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            -*) ;;
            *) if [[ -z "$cmd" ]]; then cmd="${{COMP_WORDS[i]}}"
               elif [[ -z "$act" ]]; then act="${{COMP_WORDS[i]}}"; fi ;;
        esac
    done
    case "$cmd" in
        "") flags={flags}; names={names}; files="" ;;
{chr(10).join(cases)}
        *) flags=""; names=""; files=1 ;;
    esac
    case "$cmd${{act:+ $act}}" in
{chr(10).join(nested)}
    esac
    case "$cmd${{act:+ $act}}" in
{dynamic}
    esac
    if [[ -n "$dyn" ]]; then
        names="$names $({prog} completion --words "$dyn" 2>/dev/null)"
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    elif [[ -n "$files" ]]; then
        COMPREPLY=($(compgen -W "$names" -- "$cur") $(compgen -f -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$names" -- "$cur"))
    fi
}}
complete -o filenames -F {func} {prog}
"""


def zsh_script(parser: argparse.ArgumentParser) -> str:
    return bash_script(parser, zsh=True)


# -- fish ---------------------------------------------------------------------------------------

def _fish(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_flags(prog: str, cond: str, parser: argparse.ArgumentParser) -> list[str]:
    lines = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        opts = []
        for opt in action.option_strings:
            opts.append(f"-l {opt[2:]}" if opt.startswith("--") else f"-s {opt[1:]}")
        value = " -r" if action.nargs != 0 else ""
        help_text = f" -d {_fish(action.help.splitlines()[0][:70])}" if action.help else ""
        lines.append(f"complete -c {prog} -n {_fish(cond)} {' '.join(opts)}{value}{help_text}")
    return lines


def fish_script(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    subs = _subparsers(parser)
    lines = [f"# fish completion for {prog}; generated by '{prog} completion fish'.",
             f"# Install: {prog} completion fish > ~/.config/fish/completions/{prog}.fish",
             f"complete -c {prog} -f"]
    lines += _fish_flags(prog, "__fish_use_subcommand", parser)
    for name, sub in subs.items():
        lines.append(f"complete -c {prog} -n __fish_use_subcommand -a {_fish(name)}"
                     + (f" -d {_fish(_help(parser, name))}" if _help(parser, name) else ""))
        seen = f"__fish_seen_subcommand_from {name}"
        actions = _subparsers(sub)
        if actions:
            none_yet = f"{seen}; and not __fish_seen_subcommand_from {' '.join(actions)}"
            lines += [f"complete -c {prog} -n {_fish(none_yet)} -a {_fish(act)}"
                      + (f" -d {_fish(_help(sub, act))}" if _help(sub, act) else "")
                      for act in actions]
        lines += _fish_flags(prog, seen, sub)
        for act, act_parser in actions.items():
            cond = f"{seen}; and __fish_seen_subcommand_from {act}"
            lines += _fish_flags(prog, cond, act_parser)
            if any(not a.choices for a in _positionals(act_parser)):
                lines.append(f"complete -c {prog} -n {_fish(cond)} -F")
        choices = [str(c) for a in _positionals(sub) for c in (a.choices or ())]
        if choices:
            lines.append(f"complete -c {prog} -n {_fish(seen)} -a {_fish(' '.join(choices))}")
        if not actions and any(not a.choices for a in _positionals(sub)):
            lines.append(f"complete -c {prog} -n {_fish(seen)} -F")
    for (cmd, act), kind in DYNAMIC.items():
        cond = f"__fish_seen_subcommand_from {cmd}"
        if act:
            cond += f"; and __fish_seen_subcommand_from {act}"
        lines.append(f"complete -c {prog} -n {_fish(cond)} "
                     f"-a {_fish(f'({prog} completion --words {kind} 2>/dev/null)')}")
    return "\n".join(lines) + "\n"


def _help(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name and choice.help:
                    return str(choice.help).split(";")[0][:70]
    return ""


SCRIPTS = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    return SCRIPTS[shell](parser)


def print_words(kind: str, mount: str | None) -> None:
    for word in words(kind, mount):
        print(word)


