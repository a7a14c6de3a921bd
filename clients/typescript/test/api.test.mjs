// The public names are pinned, so the API cannot drift by accident (as tests/clients pins
// the Python client's __all__).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as lockgate from "../dist/index.js";

test("the package exports exactly the documented names", () => {
  const names = Object.keys(lockgate).filter((n) => n !== "default" && n !== "__esModule").sort();
  assert.deepEqual(names, [
    "AlreadyExists", "Client", "CloudEvent", "DecryptionError", "Event", "FailedPrecondition",
    "InvalidArgument", "InvalidEvent", "InvalidSubject", "KeyMismatch", "LockgateError", "Message",
    "NoResponders", "NotFound", "PermissionDenied", "QuotaExceeded", "REASONS", "RateLimited",
    "RequestTimeout", "SlowConsumer", "StoredEvent", "Subscription", "TLSError", "Unauthenticated",
    "Unavailable", "UnsafeKeystore", "decodeAttributes", "decodeData", "encodeCloudEvent",
    "encodePayload", "errorClassName", "errorForReason", "fromServiceError", "toCloudEvent", "z",
  ]);
});
