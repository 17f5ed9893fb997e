#!/bin/bash
# The customer's checkout command from the AWS Marketplace seller guide, run in
# the account that received the test license.
set -euo pipefail

PRODUCT_ID="${PRODUCT_ID:?set PRODUCT_ID}"
VENDOR_ACCOUNT_ID="${VENDOR_ACCOUNT_ID:?set VENDOR_ACCOUNT_ID}"

# The following example uses a key fingerprint that should match the test license you created.
# When checking out an actual AWS Marketplace created license, use the following fingerprint:
# aws:294406891311:AWS/Marketplace:issuer-fingerprint
aws license-manager checkout-license \
  --product-sku "${PRODUCT_ID}" \
  --checkout-type PROVISIONAL \
  --key-fingerprint "aws:${VENDOR_ACCOUNT_ID}:Self:issuer-fingerprint" \
  --entitlements "Name=ReadOnly,Value=1,Unit=Count" \
  --client-token $(uuidgen)
