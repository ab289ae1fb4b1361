// One GameLift call through the AWS SDK for JavaScript v3, for the emulator's tests.
// Usage: node client.mjs ENDPOINT COMMAND JSON_INPUT; prints the answer (or the error) as JSON.
import * as gamelift from "@aws-sdk/client-gamelift";

const [endpoint, command, input] = process.argv.slice(2);
const client = new gamelift.GameLiftClient({
  endpoint,
  region: "us-west-2",
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
  maxAttempts: 1,
});
try {
  const answer = await client.send(new gamelift[`${command}Command`](JSON.parse(input)));
  process.stdout.write(JSON.stringify({ ok: true, answer }));
} catch (error) {
  const status = error.$metadata?.httpStatusCode;
  process.stdout.write(JSON.stringify({ ok: false, name: error.name, message: error.message, status }));
}
