"""The program of one Python session's child process (run with `python3 -u -c <this source>`, so
the session's sys.path[0] is its working directory, as in a REPL, and no runtime module shadows a
user's). Commands arrive as JSON lines on the fd named by argv[1], events leave as JSON lines on
the fd of argv[2]; stdout and
stderr are the child's own fds 1 and 2, which the runtime reads and streams. Each run ends with a
"done" event written after stdout and stderr are flushed, so the runtime, which drains both pipes
before forwarding "done", never loses output that came before it."""
import ast
import builtins
import json
import linecache
import os
import sys
import traceback


def main():
    commands = os.fdopen(int(sys.argv[1]), "r", encoding="utf-8")
    events = os.fdopen(int(sys.argv[2]), "w", encoding="utf-8", buffering=1)
    for fd in (int(sys.argv[1]), int(sys.argv[2])):
        os.set_inheritable(fd, False)  # the user's subprocesses must not hold the protocol pipes
    sys.argv = [""]  # as in an interactive interpreter
    sys.stdin = open(os.devnull, "r")
    namespace = {"__name__": "__main__", "__builtins__": builtins}

    def send(obj):
        events.write(json.dumps(obj) + "\n")

    def error(exc, status):
        frames = traceback.extract_tb(exc.__traceback__)
        # Only the user's frames (the cells), not this program's.
        lines = traceback.format_list([f for f in frames if f.filename.startswith("<cell")])
        lines += traceback.format_exception_only(type(exc), exc)
        return {"status": status, "error": {"ename": type(exc).__name__, "evalue": str(exc), "traceback": "".join(lines)}}

    count = 0
    while True:
        try:
            line = commands.readline()
        except KeyboardInterrupt:
            continue  # an interrupt that arrived after a run ended
        if not line:
            return
        try:
            command = json.loads(line)
        except ValueError:
            continue
        count += 1
        outcome = {"status": "ok", "error": None}
        name = f"<cell {count}>"
        code = command.get("code", "")
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)  # source lines in tracebacks
        try:
            try:
                tree = ast.parse(code, filename=name, mode="exec")
                last = None
                if tree.body and isinstance(tree.body[-1], ast.Expr):
                    last = ast.Expression(tree.body.pop().value)
                exec(compile(tree, name, "exec"), namespace)
                if last is not None:
                    value = eval(compile(last, name, "eval"), namespace)
                    if value is not None:
                        builtins._ = value
                        send({"type": "result", "data": repr(value)})
            except KeyboardInterrupt as exc:
                outcome = error(exc, "interrupted")
            except BaseException as exc:  # SystemExit too: a session outlives sys.exit(), as a notebook does
                outcome = error(exc, "error")
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
        except KeyboardInterrupt as exc:
            outcome = error(exc, "interrupted")
        while True:
            try:
                send({"type": "done", **outcome})
                break
            except KeyboardInterrupt:
                continue


main()
