"""Parses Prometheus text from stdin with prometheus_client's own parser
and prints the samples as JSON: [{"name", "labels", "value"}, ...] (the
parser raises on anything the format does not allow)."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    samples = []
    types = {}
    for family in text_string_to_metric_families(sys.stdin.read()):
        types[family.name] = family.type
        for s in family.samples:
            samples.append({"name": s.name, "labels": s.labels, "value": s.value})
    print(json.dumps({"types": types, "samples": samples}))


if __name__ == "__main__":
    main()
