import SmartCard

/// What a reader family's firmware can do with a MIFARE Classic card, and how it wants its keys.
///
/// Chosen from the reader's name (`matching(readerName:)`); when the name says nothing (a virtual reader),
/// by probing the ACS firmware-version command (`probe(_:)`); always overridable by the caller.
public struct ReaderProfile: Sendable, Hashable, CustomStringConvertible {
    /// How the firmware exposes MIFARE value-block operations.
    public enum ValueCommands: String, Sendable, Hashable {
        /// ACS `FF D7` (store/increment/decrement + transfer, restore+transfer) and `FF B1` (read value); values MSB first.
        case acs
        /// HID OMNIKEY `FF D4` increment / `FF D8` decrement (+ transfer into the same block); values LSB first.
        case omnikey
        /// None: a value block can only be read and rewritten whole with READ/UPDATE BINARY, which needs write permission.
        case none
    }

    public let kind: ReaderKind
    /// Human name for diagnostics ("ACS ACR122U").
    public let name: String
    public let valueCommands: ValueCommands
    /// Number of key slots LOAD KEYS accepts.
    public let keySlots: Int
    /// The LOAD KEYS key-structure byte (P1): 00 volatile, 20 non-volatile.
    public let keyStructure: UInt8
    /// Whether loaded keys are lost at power-off (volatile) or kept in the reader's EEPROM.
    public var keysAreVolatile: Bool { keyStructure & 0x20 == 0 }
    /// USB vendor and product ID ("072f:2200"), for udev rules; `nil` for the generic profile.
    public let usbID: String?
    /// Whether the firmware answers most failures with the catch-all `63 00` instead of a specific status word.
    public let reportsFailuresAsGeneric: Bool
    /// How many consecutive data blocks of one sector one READ BINARY returns (ACS "Multiple Blocks Mode": Le = 16 x n).
    public var blocksPerRead: Int = 1

    /// Whether the firmware can increment, decrement and copy value blocks itself.
    public var hasNativeValueOperations: Bool { valueCommands != .none }

    public var description: String { "\(kind.rawValue) (\(name))" }

    public static let acr122u = ReaderProfile(
        kind: .acr122u, name: "ACS ACR122U", valueCommands: .acs, keySlots: 2, keyStructure: 0x00,
        usbID: "072f:2200", reportsFailuresAsGeneric: true)
    public static let acr1252u = ReaderProfile(
        kind: .acr1252u, name: "ACS ACR1252U", valueCommands: .acs, keySlots: 2, keyStructure: 0x00,
        usbID: "072f:223b", reportsFailuresAsGeneric: true, blocksPerRead: 3)
    public static let omnikey5422 = ReaderProfile(
        kind: .omnikey5422, name: "HID OMNIKEY 5422", valueCommands: .omnikey, keySlots: 32, keyStructure: 0x20,
        usbID: "076b:5422", reportsFailuresAsGeneric: false)
    public static let generic = ReaderProfile(
        kind: .generic, name: "generic PC/SC Part 3 reader", valueCommands: .none, keySlots: 2, keyStructure: 0x00,
        usbID: nil, reportsFailuresAsGeneric: false)

    /// The profile of a reader family.
    public static func profile(for kind: ReaderKind) -> ReaderProfile {
        switch kind {
        case .acr122u: return .acr122u
        case .acr1252u: return .acr1252u
        case .omnikey5422: return .omnikey5422
        case .generic: return .generic
        }
    }

    /// The profile a PC/SC reader name identifies, or `nil` when the name says nothing about the firmware
    /// (e.g. "Virtual PCD 00 00"). Names as pcscd's CCID driver reports them, e.g.
    /// "ACS ACR122U PICC Interface 00 00", "ACS ACR1252 1S CL Reader [ACR1252 Dual Reader PICC] 00 00",
    /// "HID Global OMNIKEY 5422 Smartcard Reader [OMNIKEY 5422CL Smartcard Reader] 01 00".
    public static func matching(readerName: String) -> ReaderProfile? {
        let name = readerName.uppercased()
        if name.contains("ACR122") { return .acr122u }
        if name.contains("ACR1252") { return .acr1252u }
        if name.contains("OMNIKEY") && name.contains("5422") { return .omnikey5422 }
        return nil
    }

    /// The ACS "get firmware version" pseudo-APDU; the ACR122U answers ASCII ("ACR122U215") without a status word.
    public static let firmwareVersionCommand: [UInt8] = [0xFF, 0x00, 0x48, 0x00, 0x00]

    /// Asks the reader for its ACS firmware version and picks the profile from the answer:
    /// an ACS reader answers "ACR122U…" or "ACR1252U…", anything else is treated as a generic Part 3 reader.
    /// Returns the profile and the firmware string, if any.
    public static func probe(_ channel: any CardChannel) throws -> (profile: ReaderProfile, firmware: String?) {
        let answer = try channel.transmit(firmwareVersionCommand)
        var text = answer
        if text.count >= 2, text.suffix(2) == [0x90, 0x00] { text.removeLast(2) }
        let printable = text.allSatisfy { $0 >= 0x20 && $0 < 0x7F }
        guard printable, !text.isEmpty else { return (.generic, nil) }
        let firmware = String(decoding: text, as: UTF8.self)
        if firmware.hasPrefix("ACR122") { return (.acr122u, firmware) }
        if firmware.hasPrefix("ACR1252") { return (.acr1252u, firmware) }
        return (.generic, firmware)
    }
}
