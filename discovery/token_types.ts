/**
 * @module
 * What cryptsleep knows of each LUKS2 token type systemd enrolls, in one table: how the prompt names it, whether a
 * token of it asks for a PIN (read from its JSON), and which libraries its code loads later with dlopen(3) — the
 * `.note.dlopen` features it declares and the sonames it builds at run time — which must be loaded before the pin.
 *
 * @example
 * ```ts
 * import { tokenType } from "./token_types.ts";
 * const tpm2 = tokenType("systemd-tpm2")!;
 * console.log(tpm2.label, tpm2.wantsPin({ "tpm2-pin": true }), tpm2.features); // TPM2 true ["tpm"]
 * console.log(tokenType("luks2-keyring")); // undefined: not a token cryptsleep uses
 * ```
 */

/** A token type cryptsleep can use after wake, through libcryptsetup's plugin for it. */
export interface TokenType {
  /** How the prompt names it: "TPM2 PIN to unlock …". */
  label: string;
  /** Whether a token, by its JSON in the LUKS2 header, asks for a PIN. */
  wantsPin(json: Record<string, unknown>): boolean;
  /** The `.note.dlopen` features of the libraries its plugin loads later. */
  features: string[];
  /** Libraries it dlopens by a name built at run time, which no note can declare. */
  also: string[];
}

const TYPES: Record<string, TokenType> = {
  "systemd-tpm2": {
    label: "TPM2",
    wantsPin: (json) => json["tpm2-pin"] === true,
    features: ["tpm"],
    // the TCTI's name is made from the device type ("device")
    also: ["libtss2-tcti-device.so.0"],
  },
  "systemd-fido2": {
    label: "FIDO2",
    wantsPin: (json) => json["fido2-clientPin-required"] === true,
    features: ["fido2"],
    also: [],
  },
  // a PKCS#11 token always asks for its PIN
  "systemd-pkcs11": { label: "PKCS#11", wantsPin: () => true, features: ["p11-kit"], also: [] },
};

/** The type `name` ("systemd-tpm2"), or undefined for one cryptsleep does not use. */
export function tokenType(name: string): TokenType | undefined {
  return Object.hasOwn(TYPES, name) ? TYPES[name] : undefined;
}
