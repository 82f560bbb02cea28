"""An extension API server for tests/aggregator.rs, serving wardle.example.com/v1alpha1
Flunders from memory, as the API server's aggregator reaches it.

It trusts requests as upstream's delegated authentication does with the
extension-apiserver-authentication ConfigMap: only a client certificate from the
request-header CA, with an allowed common name, may name the user in X-Remote-User and
X-Remote-Group; anything else is refused with 401.

  GET    /apis/wardle.example.com/v1alpha1                       the resource list
  GET    /apis/wardle.example.com/v1alpha1[/namespaces/NS]/flunders  a FlunderList;
         with watch=true, an ADDED event per Flunder, then the stream stays open for
         30 seconds (so a test can tell a streamed answer from a buffered one)
  POST   /apis/wardle.example.com/v1alpha1/namespaces/NS/flunders    create; the
         annotation wardle.example.com/created-by says who the aggregator said asked
  GET    /apis/wardle.example.com/v1alpha1/namespaces/NS/flunders/NAME
  DELETE /apis/wardle.example.com/v1alpha1/namespaces/NS/flunders/NAME
  GET    any path the JSON object in the file $FIXTURES has as a key: its value (the
         file is read on each request, so a test can change the answers)

Usage: aggregated_server.py CERT KEY CLIENT_CA ALLOWED_NAMES_JSON PORT. Every request's
method, path and identity headers are appended to $AGGREGATED_LOG, one JSON line each.
"""

import json
import os
import ssl
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GROUP_VERSION = "wardle.example.com/v1alpha1"
PREFIX = "/apis/" + GROUP_VERSION
RESOURCES = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": GROUP_VERSION,
    "resources": [
        {
            "name": "flunders",
            "singularName": "flunder",
            "namespaced": True,
            "kind": "Flunder",
            "verbs": ["create", "delete", "get", "list", "watch"],
            "shortNames": ["fl"],
        }
    ],
}

flunders = {}  # (namespace, name) -> object
lock = threading.Lock()
revision = [0]


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def identity(self):
        cert = self.connection.getpeercert() or {}
        names = [value for rdn in cert.get("subject", ()) for (key, value) in rdn if key == "commonName"]
        if not any(name in ALLOWED_NAMES for name in names):
            return None
        return {"user": self.headers.get("X-Remote-User"),
                "groups": self.headers.get_all("X-Remote-Group") or []}

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self, method):
        who = self.identity()
        path, _, query = self.path.partition("?")
        with open(os.environ["AGGREGATED_LOG"], "a") as log:
            log.write(json.dumps({"method": method, "path": path, "query": query, "identity": who,
                                  "authorization": self.headers.get("Authorization")}) + "\n")
        if who is None or not who["user"]:
            return self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
        if method == "GET":
            with open(os.environ["FIXTURES"]) as f:
                fixtures = json.load(f)
            if path in fixtures:
                return self.send_json(200, fixtures[path])
        body = None
        if method == "POST":
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        if path == PREFIX:
            return self.send_json(200, RESOURCES)
        parts = path[len(PREFIX):].strip("/").split("/") if path.startswith(PREFIX) else []
        namespace = None
        if parts[:1] == ["namespaces"] and len(parts) >= 3:
            namespace, parts = parts[1], parts[2:]
        if parts[:1] != ["flunders"]:
            return self.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))
        name = parts[1] if len(parts) > 1 else None
        if method == "GET" and name is None:
            with lock:
                items = [o for (ns, _), o in sorted(flunders.items()) if namespace in (None, ns)]
            if "watch=true" in query or "watch=1" in query:
                return self.watch(items)
            return self.send_json(200, {"kind": "FlunderList", "apiVersion": GROUP_VERSION,
                                        "metadata": {"resourceVersion": str(revision[0])}, "items": items})
        if method == "POST" and name is None:
            with lock:
                revision[0] += 1
                meta = body.setdefault("metadata", {})
                meta.update({"namespace": namespace, "uid": str(uuid.uuid4()),
                             "resourceVersion": str(revision[0]),
                             "creationTimestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
                meta.setdefault("annotations", {})["wardle.example.com/created-by"] = who["user"]
                if (namespace, meta.get("name")) in flunders:
                    return self.send_json(409, status(409, "AlreadyExists", "flunders.wardle.example.com \"%s\" already exists" % meta.get("name")))
                flunders[(namespace, meta.get("name"))] = body
            return self.send_json(201, body)
        with lock:
            found = flunders.get((namespace, name))
            if method == "DELETE" and found is not None:
                del flunders[(namespace, name)]
        if found is None:
            return self.send_json(404, status(404, "NotFound", "flunders.wardle.example.com \"%s\" not found" % name))
        if method == "DELETE":
            return self.send_json(200, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                                        "details": {"name": name, "group": "wardle.example.com", "kind": "flunders"}})
        return self.send_json(200, found)

    def watch(self, items):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for item in items:
            line = (json.dumps({"type": "ADDED", "object": item}) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
        time.sleep(30)
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")


if __name__ == "__main__":
    cert, key, client_ca, allowed, port = sys.argv[1:6]
    ALLOWED_NAMES = json.loads(allowed)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(client_ca)
    server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()
