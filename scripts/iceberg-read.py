#!/usr/bin/env python3
"""An independent reader of a route's Iceberg table: pyiceberg's SqlCatalog over the same
catalog tables (`iceberg_tables` in PostgreSQL) the committer writes, reading data and
metadata from S3 (AWS_ENDPOINT_URL when set). Prints one JSON object: the rows' values of the
asked columns, the number of snapshots and of data files, each data file's partition, and
each snapshot's summary properties.

usage: iceberg-read.py <postgres-url> <namespace> <table> <column>[,<column>...]
       iceberg-read.py metadata:<s3://…metadata.json> - - <column>[,<column>...]
(the second form reads a table whose catalog pyiceberg cannot open, such as Amazon S3 Tables
through its native API: from the metadata file the catalog names as current)
"""
import json
import os
import sys

from pyiceberg.catalog.sql import SqlCatalog


def main():
    url, namespace, table, columns = sys.argv[1:5]
    # SQLAlchemy names the driver in the scheme; the query string (sslmode) stays.
    sa_url = url.replace("postgres://", "postgresql+psycopg2://", 1).replace(
        "postgresql://", "postgresql+psycopg2://", 1
    )
    props = {"uri": sa_url, "s3.region": os.environ.get("AWS_REGION", "us-east-1")}
    if os.environ.get("AWS_ENDPOINT_URL"):
        props["s3.endpoint"] = os.environ["AWS_ENDPOINT_URL"]
        props["s3.force-virtual-addressing"] = "false"
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        props["s3.access-key-id"] = os.environ["AWS_ACCESS_KEY_ID"]
        props["s3.secret-access-key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    if url.startswith("metadata:"):
        from pyiceberg.table import StaticTable

        props.pop("uri")
        t = StaticTable.from_metadata(url[len("metadata:"):], properties=props)
    else:
        catalog = SqlCatalog("streamload", **props)
        t = catalog.load_table(f"{namespace}.{table}")
    cols = columns.split(",")
    arrow = t.scan(selected_fields=tuple(cols)).to_arrow()
    rows = [[None if v is None else str(v) for v in r.values()] for r in arrow.to_pylist()]
    files = list(t.inspect.files().to_pylist())
    snapshots = list(t.snapshots())
    print(json.dumps({
        "rows": rows,
        "snapshots": len(snapshots),
        "summaries": [dict(s.summary.additional_properties) if s.summary else {} for s in snapshots],
        "data_files": len(files),
        "partitions": sorted({json.dumps(f["partition"], default=str, sort_keys=True) for f in files}),
        "file_paths": sorted(f["file_path"] for f in files),
        "field_ids": {f.name: f.field_id for f in t.schema().fields},
    }))


if __name__ == "__main__":
    main()
