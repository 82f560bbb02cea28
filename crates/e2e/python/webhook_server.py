"""An admission webhook over HTTPS, for tests/webhooks.rs: the API server sends it
admission.k8s.io/v1 AdmissionReviews; it answers by path.

  /mutate    adds the label `webhook-mutated: "yes"` (a JSON patch)
  /deny      refuses ConfigMaps holding a `forbidden` key; allows everything else
  /deny-all  refuses everything
  /slow      answers allowed after 5 seconds
  /broken    answers HTTP 500
  /observe   records the object's label keys in the annotation `observed-labels`
  /convert   a CRD conversion webhook (apiextensions.k8s.io/v1 ConversionReview), as
             upstream's sample converter: v1 objects hold `hostPort: "host:port"`, v2
             ones `host` and `port`

Usage: webhook_server.py CERT KEY PORT. Every review it gets is appended to the file named
by $WEBHOOK_LOG, one JSON line each.
"""

import base64
import json
import os
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer(review, allowed, message=None, patch=None):
    response = {"uid": review["request"]["uid"], "allowed": allowed}
    if message is not None:
        response["status"] = {"code": 403, "message": message}
    if patch is not None:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def convert(obj, desired):
    obj = json.loads(json.dumps(obj))
    current = obj["apiVersion"].split("/")[-1]
    wanted = desired.split("/")[-1]
    if current == "v1" and wanted == "v2" and "hostPort" in obj:
        host, _, port = obj.pop("hostPort").partition(":")
        obj["host"], obj["port"] = host, port
    elif current == "v2" and wanted == "v1" and ("host" in obj or "port" in obj):
        obj["hostPort"] = "%s:%s" % (obj.pop("host", ""), obj.pop("port", ""))
    obj["apiVersion"] = desired
    return obj


def conversion_answer(review):
    request = review["request"]
    converted = [convert(o, request["desiredAPIVersion"]) for o in request["objects"]]
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
            "response": {"uid": request["uid"], "convertedObjects": converted,
                         "result": {"status": "Success"}}}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        review = json.loads(self.rfile.read(length))
        with open(os.environ["WEBHOOK_LOG"], "a") as log:
            log.write(json.dumps({"path": self.path, "request": review["request"]}) + "\n")
        if self.path == "/convert":
            return self.answer(conversion_answer(review))
        obj = review["request"].get("object") or {}
        if self.path == "/mutate":
            labels = (obj.get("metadata") or {}).get("labels")
            patch = [{"op": "add", "path": "/metadata/labels", "value": {}}] if labels is None else []
            patch.append({"op": "add", "path": "/metadata/labels/webhook-mutated", "value": "yes"})
            body = answer(review, True, patch=patch)
        elif self.path == "/observe":
            meta = obj.get("metadata") or {}
            keys = ",".join(sorted((meta.get("labels") or {}).keys()))
            patch = [] if meta.get("annotations") is not None else [
                {"op": "add", "path": "/metadata/annotations", "value": {}}]
            patch.append({"op": "add", "path": "/metadata/annotations/observed-labels", "value": keys})
            body = answer(review, True, patch=patch)
        elif self.path == "/deny":
            if "forbidden" in (obj.get("data") or {}):
                body = answer(review, False, "the configmap contains forbidden data")
            else:
                body = answer(review, True)
        elif self.path == "/deny-all":
            body = answer(review, False, "nothing passes")
        elif self.path == "/slow":
            time.sleep(5)
            body = answer(review, True)
        else:
            self.send_response(500)
            self.end_headers()
            return
        self.answer(body)

    def answer(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the API server gave up waiting (a timeout test)

    def log_message(self, *args):
        pass


def main():
    cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
