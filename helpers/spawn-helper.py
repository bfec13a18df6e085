#!/usr/bin/env python3
"""The spawn helper in Python: what src/git/spawn-helper.ts does, at about half its CPU per spawn.

A node starts git through a helper process so that the fork is not of the node (src/git/spawner.ts).
The Node.js helper forks a 50 MB process for every git process (about 1.2 ms of its CPU per
spawn, sockets included); Python's subprocess starts a process with vfork (about 0.5 ms). Same
protocol as the Node.js helper: requests `{id, file, args, cwd, env}` arrive as JSON lines on the
node's IPC channel (NODE_CHANNEL_FD); for each, three sockets are connected to the node's Unix
socket (a first line `<id> <fd>` says which stream each is) and handed to the process as its stdin,
stdout and stderr; the helper reports `{id, pid}`, then `{id, code, signal}` when it exits, or
`{id, error}`. It exits when the node does (its IPC channel closes).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time


def main():
    if len(sys.argv) != 2 or "NODE_CHANNEL_FD" not in os.environ:
        sys.stderr.write("spawn-helper.py: run by a node, with its socket path and an IPC channel\n")
        sys.exit(2)
    socket_path = sys.argv[1]
    channel = socket.socket(fileno=int(os.environ.pop("NODE_CHANNEL_FD")))
    os.environ.pop("NODE_CHANNEL_SERIALIZATION_MODE", None)
    lock = threading.Lock()

    def report(message):
        data = (json.dumps(message) + "\n").encode()
        with lock:
            try:
                channel.sendall(data)
            except OSError:
                os._exit(0)

    # One thread reaps every process the helper started (a thread per process cost about 0.4 ms
    # of CPU per spawn). `procs` maps a pid to its entry, entered under `spawning` with its Popen.
    # The reaper only peeks at an exited child (WNOWAIT) and reaps it only if it is in `procs`:
    # a child whose exec failed is Popen's to reap (it does, before it raises), so neither takes
    # the other's. An exit is reported only after its pid: if the pid's report has not gone out
    # yet, the spawning thread sends the exit after it. Popen is told the exit status, so that
    # its own clean-up never waits for a pid that is gone (or another process's).
    procs = {}
    spawning = threading.Lock()
    started = threading.Semaphore(0)

    def exit_message(req_id, status):
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "SIG%d" % -code
            return {"id": req_id, "code": None, "signal": name}, code
        return {"id": req_id, "code": code, "signal": None}, code

    def reaper():
        while True:
            started.acquire()  # one per live process: waitid below then has a child to wait for
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except InterruptedError:
                started.release()
                continue
            except ChildProcessError:
                continue
            pid = info.si_pid
            with spawning:
                entry = procs.pop(pid, None)
            if entry is None:
                # Not ours: a child whose exec failed, which Popen has reaped by now. The process
                # the count was taken for is still running: give the count back.
                started.release()
                time.sleep(0.001)
                continue
            _, status = os.waitpid(pid, 0)
            message, code = exit_message(entry["id"], status)
            entry["proc"].returncode = code
            with spawning:
                if not entry["pid_reported"]:
                    entry["exit"] = message
                    continue
            report(message)

    threading.Thread(target=reaper, daemon=True).start()

    # Where each program is, by its name and PATH, found once: a name looked up through PATH on
    # every spawn costs an execve that fails for each directory before git's.
    found = {}

    def locate(file, env):
        if os.sep in file:
            return file
        # A relative PATH entry names another directory in each git's cwd: looked up by exec then.
        if any(not os.path.isabs(d) for d in env.get("PATH", os.defpath).split(os.pathsep)):
            return file
        key = (file, env.get("PATH"))
        path = found.get(key)
        if path is None:
            path = shutil.which(file, path=env.get("PATH", os.defpath))
            if path is None:
                return file  # Popen reports it missing, as before
            found[key] = path
        return path

    def start(req):
        req_id = req["id"]
        socks = []
        try:
            for fd in (0, 1, 2):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                socks.append(s)
                s.connect(socket_path)
                s.sendall(b"%d %d\n" % (req_id, fd))
            env = req["env"]
            with spawning:
                proc = subprocess.Popen(
                    [req["file"], *req["args"]],
                    executable=locate(req["file"], env),
                    cwd=req.get("cwd"),
                    env=env,
                    stdin=socks[0].fileno(),
                    stdout=socks[1].fileno(),
                    stderr=socks[2].fileno(),
                )
                entry = {"id": req_id, "proc": proc, "pid_reported": False, "exit": None}
                procs[proc.pid] = entry
        except Exception as err:  # a missing program or directory, a refused socket
            report({"id": req_id, "error": "spawn %s: %s" % (req.get("file"), err)})
            return
        finally:
            # The process holds its own copies; the node sees a stream end once it closes them.
            for s in socks:
                s.close()
        started.release()
        report({"id": req_id, "pid": proc.pid})
        with spawning:
            entry["pid_reported"] = True
            exited = entry["exit"]
        if exited is not None:
            report(exited)

    # The node's shutdown signals are the node's: the helper ends with its IPC channel. A handler,
    # not SIG_IGN, so that the processes it starts get the default dispositions back.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)

    pending = b""
    while True:
        try:
            data = channel.recv(65536)
        except InterruptedError:
            continue
        if not data:
            os._exit(0)
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                start(json.loads(line))


if __name__ == "__main__":
    main()
