"""A function of the local cloud behind Cloud Run's invoker check.

``python -m cascade.localcloud.function_host`` serves one function as
``python -m functions_framework`` does (its own app and server), with
``id_tokens.InvokerCheck`` in front: only an ID token of the local issuer, for the
function's URL, naming one of the function's invokers, reaches the function. An HTTP
function's invokers are its topology group's members; an event function's, the invoker
account alone (the event router delivers as it, as Eventarc and Pub/Sub push do).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--signature-type", choices=("http", "cloudevent"), default="http")
    parser.add_argument("--function", required=True, help="The function's topology name.")
    parser.add_argument("--audience", required=True, help="The function's URL.")
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument(
        "--invokers", default="", help="Comma-separated IAM members of its invoker group."
    )
    arguments = parser.parse_args(argv)

    from functions_framework import create_app
    from functions_framework._http import create_server

    from cascade.localcloud.id_tokens import InvokerCheck, LocalIdTokens

    app = create_app(  # type: ignore[no-untyped-call]
        arguments.target, arguments.source, arguments.signature_type
    )
    app.wsgi_app = InvokerCheck(
        app.wsgi_app,
        LocalIdTokens(arguments.key_file),
        audience=arguments.audience,
        members=tuple(member for member in arguments.invokers.split(",") if member),
        function=arguments.function,
    )
    create_server(app, False).run(arguments.host, arguments.port)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
