"""boto3 against `cess gateway` (run by tools/tests/gateway.rs, which passes the endpoint, two
owners' keys and the gateway's segment payload). Every check raises on failure; the last line
printed is "all checks passed"."""

import hashlib
import http.client
import os
import sys
import urllib.parse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, key_a, secret_a, key_b, secret_b, payload, workdir = sys.argv[1:8]
payload = int(payload)
MIB = 1 << 20


def client(key, secret):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def error_code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError("the call succeeded; an error was expected")


def data(size, seed):
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")
    print(f"ok: {what}")


a = client(key_a, secret_a)
b = client(key_b, secret_b)

# Buckets: made, listed, named by S3's rules, one owner's invisible to the other.
a.create_bucket(Bucket="photos")
a.create_bucket(Bucket="docs")
check("owner A's buckets", sorted(x["Name"] for x in a.list_buckets()["Buckets"]), ["docs", "photos"])
check("owner B sees none of A's", [x["Name"] for x in b.list_buckets()["Buckets"]], [])
check("a bad bucket name", error_code(lambda: a.create_bucket(Bucket="Bad_Name")), "InvalidBucketName")
check("a bucket twice", error_code(lambda: a.create_bucket(Bucket="docs")), "BucketAlreadyOwnedByYou")

# PUT and GET byte-identical at every size asked; 5 MiB + 1 and 100 MiB go in parts.
# Four parts or ranges at a time (boto3 runs ten by default): the gateway test also checks its
# peak memory stays below the largest object.
transfer = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=4)
objects = {}
for size in [0, 1, 5 * MIB + 1, 100 * MIB]:
    name = f"sizes/{size}.bin"
    body = data(size, name)
    path = os.path.join(workdir, f"up-{size}")
    with open(path, "wb") as f:
        f.write(body)
    a.upload_file(path, "photos", name, Config=transfer)
    objects[name] = body
    back = os.path.join(workdir, f"down-{size}")
    a.download_file("photos", name, back, Config=transfer)
    with open(back, "rb") as f:
        check(f"{size} bytes back byte-identical", hashlib.sha256(f.read()).hexdigest(), hashlib.sha256(body).hexdigest())
    head = a.head_object(Bucket="photos", Key=name)
    check(f"{size} bytes: HEAD length", head["ContentLength"], size)
    os.remove(path)
    os.remove(back)

# A single-part PUT's ETag is the MD5 of its bytes; a multipart one's the MD5 of its parts' MD5s.
small = data(1000, "etag")
put = a.put_object(Bucket="photos", Key="etag.bin", Body=small, ContentMD5=__import__("base64").b64encode(hashlib.md5(small).digest()).decode())
check("single-part ETag", put["ETag"].strip('"'), hashlib.md5(small).hexdigest())
check("the PUT says the file is Active", put["ResponseMetadata"]["HTTPHeaders"].get("x-cess-file-state"), "active")
big = objects["sizes/5242881.bin"]
parts = [big[:5 * MIB], big[5 * MIB:]]
want = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-2"
check("multipart ETag", a.head_object(Bucket="photos", Key="sizes/5242881.bin")["ETag"].strip('"'), want)
check(
    "a wrong Content-MD5 is refused",
    error_code(lambda: a.put_object(Bucket="photos", Key="bad.bin", Body=b"abc", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")),
    "BadDigest",
)

# Ranges at the segment boundaries: only those segments are read, the bytes are exact.
body = objects[f"sizes/{100 * MIB}.bin"]
for first, last in [
    (0, 0),
    (payload - 1, payload),
    (payload, 2 * payload - 1),
    (3 * payload - 10, 3 * payload + 10),
    (len(body) - 5, len(body) - 1),
    (7, 7 * payload + 3),
]:
    got = a.get_object(Bucket="photos", Key=f"sizes/{100 * MIB}.bin", Range=f"bytes={first}-{last}")["Body"].read()
    check(f"range {first}-{last}", hashlib.sha256(got).hexdigest(), hashlib.sha256(body[first : last + 1]).hexdigest())
got = a.get_object(Bucket="photos", Key=f"sizes/{100 * MIB}.bin", Range="bytes=-100")["Body"].read()
check("the last 100 bytes", got, body[-100:])
check(
    "a range past the end",
    error_code(lambda: a.get_object(Bucket="photos", Key="sizes/1.bin", Range="bytes=5-9")),
    "InvalidRange",
)

# Listing with prefixes and delimiters.
for name in ["a/1", "a/2", "a/b/3", "c"]:
    a.put_object(Bucket="docs", Key=name, Body=name.encode())
listed = a.list_objects_v2(Bucket="docs")
check("all keys", [o["Key"] for o in listed["Contents"]], ["a/1", "a/2", "a/b/3", "c"])
listed = a.list_objects_v2(Bucket="docs", Delimiter="/")
check("top level", [o["Key"] for o in listed.get("Contents", [])], ["c"])
check("top level prefixes", [p["Prefix"] for p in listed.get("CommonPrefixes", [])], ["a/"])
listed = a.list_objects_v2(Bucket="docs", Prefix="a/", Delimiter="/")
check("under a/", [o["Key"] for o in listed.get("Contents", [])], ["a/1", "a/2"])
check("under a/ prefixes", [p["Prefix"] for p in listed.get("CommonPrefixes", [])], ["a/b/"])
page = a.list_objects_v2(Bucket="docs", MaxKeys=2)
check("a page of 2", ([o["Key"] for o in page["Contents"]], page["IsTruncated"]), (["a/1", "a/2"], True))
rest = a.list_objects_v2(Bucket="docs", MaxKeys=2, ContinuationToken=page["NextContinuationToken"])
check("the next page", [o["Key"] for o in rest["Contents"]], ["a/b/3", "c"])
# Pages with a delimiter: a common prefix is one entry, listed once across pages.
for name in ["d/1", "d/2", "d/3", "e"]:
    a.put_object(Bucket="docs", Key=name, Body=name.encode())
seen, token = [], None
while True:
    args = {"Bucket": "docs", "Delimiter": "/", "MaxKeys": 1}
    if token:
        args["ContinuationToken"] = token
    page = a.list_objects_v2(**args)
    seen += [p["Prefix"] for p in page.get("CommonPrefixes", [])] + [o["Key"] for o in page.get("Contents", [])]
    if not page["IsTruncated"]:
        break
    token = page["NextContinuationToken"]
check("pages of one with a delimiter", seen, ["a/", "c", "d/", "e"])
for name in ["d/1", "d/2", "d/3", "e"]:
    a.delete_object(Bucket="docs", Key=name)

# Copy, overwrite, delete.
a.copy_object(Bucket="docs", Key="copy-of-c", CopySource={"Bucket": "docs", "Key": "c"})
check("the copy", a.get_object(Bucket="docs", Key="copy-of-c")["Body"].read(), b"c")
a.put_object(Bucket="docs", Key="c", Body=b"new c")
check("an overwrite", a.get_object(Bucket="docs", Key="c")["Body"].read(), b"new c")
check("one key after the overwrite", [o["Key"] for o in a.list_objects_v2(Bucket="docs", Prefix="c")["Contents"]], ["c", "copy-of-c"])
a.delete_object(Bucket="docs", Key="copy-of-c")
check("a deleted key", error_code(lambda: a.head_object(Bucket="docs", Key="copy-of-c")), "404")
check("a bucket with objects", error_code(lambda: a.delete_bucket(Bucket="docs")), "BucketNotEmpty")

# The other owner: sees nothing of A's, changes nothing of A's.
check("B reads A's object", error_code(lambda: b.get_object(Bucket="photos", Key="sizes/1.bin")), "NoSuchBucket")
check("B writes into A's bucket", error_code(lambda: b.put_object(Bucket="photos", Key="x", Body=b"x")), "NoSuchBucket")
check("B deletes A's bucket", error_code(lambda: b.delete_bucket(Bucket="docs")), "NoSuchBucket")
b.create_bucket(Bucket="photos")
b.put_object(Bucket="photos", Key="mine", Body=b"owner B")
check("B's own bucket of the same name", [o["Key"] for o in b.list_objects_v2(Bucket="photos")["Contents"]], ["mine"])
check("A does not see B's object", error_code(lambda: a.head_object(Bucket="photos", Key="mine")), "404")

# A wrong signature and an unknown key are refused.
check("a wrong secret", error_code(lambda: client(key_a, "x" * 40).list_buckets()), "SignatureDoesNotMatch")
check("an unknown key", error_code(lambda: client("CESSUNKNOWN", secret_a).list_buckets()), "InvalidAccessKeyId")

# A truncated upload (the connection closes after half the declared body) leaves nothing.
url = a.generate_presigned_url("put_object", Params={"Bucket": "photos", "Key": "truncated.bin"}, ExpiresIn=300)
parts = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
conn.putrequest("PUT", parts.path + "?" + parts.query)
conn.putheader("Content-Length", str(1 * MIB))
conn.endheaders()
conn.send(b"x" * (MIB // 2))
conn.sock.close()
check("nothing of the truncated upload", error_code(lambda: a.head_object(Bucket="photos", Key="truncated.bin")), "404")
check(
    "nothing listed of it",
    [o["Key"] for o in a.list_objects_v2(Bucket="photos", Prefix="truncated").get("Contents", [])],
    [],
)

# Emptied, a bucket goes.
for o in a.list_objects_v2(Bucket="docs")["Contents"]:
    a.delete_object(Bucket="docs", Key=o["Key"])
a.delete_bucket(Bucket="docs")
check("after deleting docs", sorted(x["Name"] for x in a.list_buckets()["Buckets"]), ["photos"])
print("all checks passed")
