"""A WSGI app as a release-directory deploy (Capistrano, Deployer, Ansible's
deploy_helper) holds it: /srv/myapp/releases/<id>/app.py, next to a VERSION
file it reads by a relative path when gunicorn's worker imports it. It
answers with the release it was started in, its working directory and the
environment baton gave it, which is how the tests prove what serves:

    baton run --directory /srv/myapp/current --env-file /srv/myapp/shared/app.env \
        -- gunicorn --workers 1 app:app

`?sleep=SECONDS` answers slowly, for tests of draining; `?leak=BYTES` keeps
that much more memory for good (every byte written, so it is resident), for
tests of --recycle-memory. docs/deploying.md walks through the deploys.
"""
import os
import time
from urllib.parse import parse_qs

with open("VERSION") as f:
    VERSION = f.read().strip()


LEAKED = []


def app(environ, start_response):
    q = parse_qs(environ.get("QUERY_STRING", ""))
    if "sleep" in q:
        time.sleep(min(float(q["sleep"][0]), 60))
    if "leak" in q:
        LEAKED.append(b"\x01" * min(int(q["leak"][0]), 1 << 26))
    body = ("release %s dir %s greeting %s slot %s pid %d\n" % (
        VERSION, os.getcwd(), os.environ.get("GREETING", "-"),
        os.environ.get("BATON_WORKER", "?"), os.getppid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
