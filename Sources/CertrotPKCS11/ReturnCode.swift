/// PKCS#11 return codes (CK_RV) by name, as errors print them.
public enum ReturnCode {
    public static let ok: UInt = 0

    /// `CKR_PIN_INCORRECT` for 0xA0; unknown codes as hex (vendor codes from 0x80000000 are marked so).
    public static func name(_ rv: UInt) -> String {
        if let name = names[rv] { return name }
        if rv == dlError { return "module not loadable" }
        return rv >= 0x8000_0000
            ? "CKR_VENDOR_DEFINED+0x\(String(rv - 0x8000_0000, radix: 16))" : "CKR_0x\(String(rv, radix: 16))"
    }

    /// Codes after which the session or the login is gone: the token went away, was reset, or logged out. The key
    /// reconnects (a new session, login, the key found again and checked to be the same key).
    public static func losesSession(_ rv: UInt) -> Bool {
        [
            0x05, 0x06, 0x30, 0x31, 0x32, 0x60, 0x82, 0x83, 0x90, 0xB0, 0xB3, 0xB4, 0xE0, 0xE1, 0x101, 0x190,
            dlError,
        ].contains(rv)
    }

    static let dlError: UInt = 0xFFFF_FFFF

    static let names: [UInt: String] = [
        0x00: "CKR_OK", 0x01: "CKR_CANCEL", 0x02: "CKR_HOST_MEMORY", 0x03: "CKR_SLOT_ID_INVALID",
        0x05: "CKR_GENERAL_ERROR", 0x06: "CKR_FUNCTION_FAILED", 0x07: "CKR_ARGUMENTS_BAD", 0x08: "CKR_NO_EVENT",
        0x09: "CKR_NEED_TO_CREATE_THREADS", 0x0A: "CKR_CANT_LOCK", 0x10: "CKR_ATTRIBUTE_READ_ONLY",
        0x11: "CKR_ATTRIBUTE_SENSITIVE", 0x12: "CKR_ATTRIBUTE_TYPE_INVALID", 0x13: "CKR_ATTRIBUTE_VALUE_INVALID",
        0x1B: "CKR_ACTION_PROHIBITED", 0x20: "CKR_DATA_INVALID", 0x21: "CKR_DATA_LEN_RANGE",
        0x30: "CKR_DEVICE_ERROR", 0x31: "CKR_DEVICE_MEMORY", 0x32: "CKR_DEVICE_REMOVED",
        0x40: "CKR_ENCRYPTED_DATA_INVALID", 0x50: "CKR_FUNCTION_CANCELED", 0x51: "CKR_FUNCTION_NOT_PARALLEL",
        0x54: "CKR_FUNCTION_NOT_SUPPORTED", 0x60: "CKR_KEY_HANDLE_INVALID", 0x62: "CKR_KEY_SIZE_RANGE",
        0x63: "CKR_KEY_TYPE_INCONSISTENT", 0x68: "CKR_KEY_FUNCTION_NOT_PERMITTED", 0x70: "CKR_MECHANISM_INVALID",
        0x71: "CKR_MECHANISM_PARAM_INVALID", 0x82: "CKR_OBJECT_HANDLE_INVALID", 0x83: "CKR_OPERATION_ACTIVE",
        0x91: "CKR_OPERATION_NOT_INITIALIZED", 0xA0: "CKR_PIN_INCORRECT", 0xA1: "CKR_PIN_INVALID",
        0xA2: "CKR_PIN_LEN_RANGE", 0xA3: "CKR_PIN_EXPIRED", 0xA4: "CKR_PIN_LOCKED", 0xB0: "CKR_SESSION_CLOSED",
        0xB1: "CKR_SESSION_COUNT", 0xB3: "CKR_SESSION_HANDLE_INVALID", 0xB4: "CKR_SESSION_PARALLEL_NOT_SUPPORTED",
        0xB5: "CKR_SESSION_READ_ONLY", 0xB6: "CKR_SESSION_EXISTS", 0xB7: "CKR_SESSION_READ_ONLY_EXISTS",
        0xB8: "CKR_SESSION_READ_WRITE_SO_EXISTS", 0xC0: "CKR_SIGNATURE_INVALID", 0xC1: "CKR_SIGNATURE_LEN_RANGE",
        0xD0: "CKR_TEMPLATE_INCOMPLETE", 0xD1: "CKR_TEMPLATE_INCONSISTENT", 0xE0: "CKR_TOKEN_NOT_PRESENT",
        0xE1: "CKR_TOKEN_NOT_RECOGNIZED", 0xE2: "CKR_TOKEN_WRITE_PROTECTED", 0x100: "CKR_USER_ALREADY_LOGGED_IN",
        0x101: "CKR_USER_NOT_LOGGED_IN", 0x102: "CKR_USER_PIN_NOT_INITIALIZED", 0x103: "CKR_USER_TYPE_INVALID",
        0x150: "CKR_BUFFER_TOO_SMALL", 0x190: "CKR_CRYPTOKI_NOT_INITIALIZED",
        0x191: "CKR_CRYPTOKI_ALREADY_INITIALIZED", 0x1A0: "CKR_MUTEX_BAD", 0x1A1: "CKR_MUTEX_NOT_LOCKED",
    ]
}
