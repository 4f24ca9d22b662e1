"""``nbcapsule enable``, ``disable`` and ``kernel install``: capture from the first cell of every kernel."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("enable", help="start capture in every IPython kernel (an IPython start-up entry)",
                       description="Load scidex_nbcapsule at the start of every IPython kernel of a profile, so that "
                       "no cell runs unobserved. `nbcapsule disable` undoes it.")
    e.add_argument("--profile", default="default", help="IPython profile (default: default)")
    e.set_defaults(handler=enable_command)
    d = sub.add_parser("disable", help="stop starting capture with every kernel")
    d.add_argument("--profile", default="default")
    d.set_defaults(handler=disable_command)
    k = sub.add_parser("kernel", help="install the 'Python 3 (capsule)' kernel spec")
    ksub = k.add_subparsers(dest="kernel_command", metavar="ACTION")
    ki = ksub.add_parser("install", help="install the kernel spec: capture from the first cell, native code and "
                         "child processes included")
    where = ki.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for this user")
    where.add_argument("--prefix", metavar="DIR", help="install under DIR/share/jupyter/kernels")
    ki.add_argument("--name", default=None, help="kernel name (default: python3-capsule)")
    ki.set_defaults(handler=kernel_install_command)


def enable_command(args: argparse.Namespace) -> int:
    from ..capture.kernelspec import enable

    path = enable(args.profile)
    print(f"capture now starts with every IPython kernel of profile {args.profile!r} ({path}); "
          "`nbcapsule disable` undoes it")
    return 0


def disable_command(args: argparse.Namespace) -> int:
    from ..capture.kernelspec import disable

    path = disable(args.profile)
    print(f"removed {path}" if path else f"capture was not enabled for profile {args.profile!r}")
    return 0


def kernel_install_command(args: argparse.Namespace) -> int:
    from ..capture import interposer
    from ..capture.kernelspec import KERNEL_NAME, install_kernel_spec

    where = install_kernel_spec(user=args.user, prefix=args.prefix, name=args.name or KERNEL_NAME)
    print(f"installed kernel spec {args.name or KERNEL_NAME!r} in {where}")
    reason = interposer.unavailable_reason()
    if reason:
        print(f"note: {reason}; the kernel will capture with the audit hook and the file watcher")
    return 0
