"""Parses Prometheus' text exposition format with the reference Python client's parser
(prometheus_client.parser), for Gambi's /metrics tests: the exposition on stdin, one JSON document
on stdout with every family as the parser read it (name, type, help, samples with their labels).

A document the parser refuses makes it exit non-zero with the parser's error.

    prometheus_parse.py < metrics.txt
"""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    families = []
    for family in text_string_to_metric_families(text):
        families.append(
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": s.value}
                    for s in family.samples
                ],
            }
        )
    # No NaN or infinity in a value: json refuses them rather than write what JSON cannot hold.
    json.dump({"families": families}, sys.stdout, allow_nan=False)


if __name__ == "__main__":
    main()
