// Verifies an mlfs manifest signature with sigstore-js (@sigstore/verify), given the publisher's public key:
// the DSSE signature by that key, no transparency log, certificate or timestamp (mlfs signs with a key alone),
// then that the statement's subject digest is the manifest's SHA-256.
//   node sigstore-verify.js MANIFEST.sig KEY.pub MANIFEST   -> "verified: NAME" and exit 0, else a non-zero exit
const fs = require('fs');
const crypto = require('crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { toSignedEntity, toTrustMaterial, Verifier } = require('@sigstore/verify');

const [bundlePath, keyPath, manifestPath] = process.argv.slice(2);
const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
const publicKey = crypto.createPublicKey(fs.readFileSync(keyPath, 'utf8'));
const noAuthorities = { certificateAuthorities: [], timestampAuthorities: [], tlogs: [], ctlogs: [] };
const trust = toTrustMaterial(noAuthorities, () => ({ publicKey, validFor: () => true }));
new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 }).verify(toSignedEntity(bundle));

const statement = JSON.parse(Buffer.from(bundle.content.dsseEnvelope.payload).toString('utf8'));
const digest = crypto.createHash('sha256').update(fs.readFileSync(manifestPath)).digest('hex');
if (statement.subject[0].digest.sha256 !== digest) {
  console.error('the statement names another manifest');
  process.exit(2);
}
console.log('verified: ' + statement.subject[0].name);
