"""Supply-chain signing, compatible with cosign's key-based format without the cosign binary.

`keys`: cosign's encrypted P-256 private keys (scrypt + nacl/secretbox) and public keys;
`simplesign`: cosign's "simple signing" image signatures (the `sha256-<hex>.sig` tag);
`dsse`: DSSE v1 envelopes around in-toto Statements (cosign attestations, `sha256-<hex>.att`).
Pure functions over bytes: nothing here talks to a registry.
"""
