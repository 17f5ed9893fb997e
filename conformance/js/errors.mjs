// The AWS SDK for JavaScript v3 against a Tessera server: every refusal
// arrives as the SDK's typed exception for its name. Reads a JSON plan on
// stdin, prints one JSON result per call.
import {
  LicenseManagerClient, GetLicenseCommand, CheckoutLicenseCommand, CheckInLicenseCommand,
  ListReceivedLicensesCommand, GetGrantCommand, LicenseManagerServiceException,
  InvalidParameterValueException, ValidationException, ResourceNotFoundException,
  NoEntitlementsAllowedException, ConflictException,
} from "@aws-sdk/client-license-manager";

const plan = JSON.parse(await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (c) => (data += c));
  process.stdin.on("end", () => resolve(data));
}));

const client = new LicenseManagerClient({
  endpoint: plan.endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: plan.accessKeyId, secretAccessKey: plan.secretAccessKey },
  maxAttempts: 1,
});

const types = {
  InvalidParameterValueException, ValidationException, ResourceNotFoundException,
  NoEntitlementsAllowedException, ConflictException,
};
const commands = { GetLicenseCommand, CheckoutLicenseCommand, CheckInLicenseCommand, ListReceivedLicensesCommand, GetGrantCommand };

const results = [];
for (const call of plan.calls) {
  try {
    const out = await client.send(new commands[call.command](call.input));
    results.push({ command: call.command, ok: true, keys: Object.keys(out).filter((k) => k !== "$metadata") });
  } catch (e) {
    results.push({
      command: call.command,
      ok: false,
      name: e.name,
      typed: call.expect in types && e instanceof types[call.expect],
      service: e instanceof LicenseManagerServiceException,
      message: e.message,
      requestId: e.$metadata?.requestId ?? null,
      status: e.$metadata?.httpStatusCode ?? null,
    });
  }
}
console.log(JSON.stringify(results));
