/**
 * @module
 * What cryptsleep knows of each LUKS2 token type systemd enrolls, in one table: how the prompt names it, whether a
 * token of it asks for a PIN (read from its JSON), and which libraries its code loads later with dlopen(3) — the
 * `.note.dlopen` features it declares and the sonames it builds at run time — which must be loaded before the pin.
 * PKCS#11 is declined, with the reason plan gives.
 *
 * @example
 * ```ts
 * import { declinedToken, tokenType } from "./token_types.ts";
 * const tpm2 = tokenType("systemd-tpm2")!;
 * console.log(tpm2.label, tpm2.wantsPin({ "tpm2-pin": true }), tpm2.features); // TPM2 true ["tpm"]
 * console.log(tokenType("luks2-keyring")); // undefined: not a token cryptsleep uses
 * console.log(declinedToken("systemd-pkcs11")); // why its PIN is not asked for after wake
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
};

/** Token types systemd enrolls that cannot work after wake, and why: their PIN is not asked for. */
const DECLINED: Record<string, string> = {
  "systemd-pkcs11": "a PKCS#11 module is found through p11-kit's configuration on the disk that is locked, and a " +
    "smartcard answers only through pcscd, which is frozen with the rest: no PIN could open it",
};

/** The type `name` ("systemd-tpm2"), or undefined for one cryptsleep does not use. */
export function tokenType(name: string): TokenType | undefined {
  return Object.hasOwn(TYPES, name) ? TYPES[name] : undefined;
}

/** Why a token of type `name` is not used after wake although systemd enrolls it, or undefined. */
export function declinedToken(name: string): string | undefined {
  return Object.hasOwn(DECLINED, name) ? DECLINED[name] : undefined;
}
