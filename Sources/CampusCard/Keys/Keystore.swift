import Crypto
import Foundation
import MifareClassic
#if canImport(Glibc)
import Glibc
#endif

/// Where a terminal gets its card keys. The file-backed `FileKeystore` is the first implementation; a SAM in a
/// second PC/SC slot can implement the same protocol later (derivation then happens inside the SAM).
/// Implementations never reveal master keys; errors and descriptions name key ids and versions only.
public protocol Keystore: Sendable {
    /// The key version new cards are issued with and re-keyed to.
    var currentVersion: UInt8 { get }
    /// Every version this keystore can derive (older ones read cards not yet re-keyed).
    var knownVersions: [UInt8] { get }
    /// The roles this keystore holds (a POS keystore holds no loader master).
    func roles(version: UInt8) -> Set<KeyRole>
    /// The MIFARE key of a sector for a role (terminal = key A, loader = key B).
    func sectorKey(uid: [UInt8], sector: Int, role: KeyRole, version: UInt8) throws -> MifareKey
    /// The card's MAC key.
    func macKey(uid: [UInt8], version: UInt8) throws -> SymmetricKey
}

/// Why a keystore could not be used: a code and one line (what, why, what to do). Never key material.
public struct KeystoreError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case unreadable, tooOpen = "too-open", malformed, exists, unknownVersion = "unknown-version", missingRole = "missing-role"
    }
    public var code: Code
    public var message: String
    public var description: String { message }
}

/// A keystore file: JSON, mode 0600, owned by the daemon's user.
///
/// ```json
/// { "format": "onecard-keystore-v1", "currentVersion": 1,
///   "versions": [ { "version": 1, "created": "2026-11-22T16:00:00Z",
///                   "masters": { "terminal": "<32 hex>", "loader": "<32 hex>", "mac": "<32 hex>" } } ] }
/// ```
/// A POS or water controller's file omits "loader"; a loading station's has all three. Loading refuses a file
/// that is group- or world-accessible.
public struct FileKeystore: Keystore {
    public let path: String
    public let currentVersion: UInt8
    private let masters: [UInt8: [KeyRole: MasterKey]]

    public var knownVersions: [UInt8] { masters.keys.sorted() }

    struct File: Codable {
        var format: String
        var currentVersion: UInt8
        var versions: [Version]
        struct Version: Codable {
            var version: UInt8
            var created: String
            var masters: [String: String]
        }
    }

    static let format = "onecard-keystore-v1"

    /// Loads and checks a keystore file.
    public init(path: String) throws {
        self.path = path
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw KeystoreError(code: .unreadable, message: "cannot read the keystore \(path): \(String(cString: strerror(errno))); create one with `cardctl keystore create \(path)`")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw KeystoreError(code: .tooOpen, message: "refusing the keystore \(path): it is readable by group or others (mode \(String(info.st_mode & 0o777, radix: 8))); run `chmod 600 \(path)`")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KeystoreError(code: .unreadable, message: "cannot read the keystore \(path): permission denied; run as its owner")
        }
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: data) } catch {
            throw KeystoreError(code: .malformed, message: "the keystore \(path) is not valid \(Self.format) JSON; restore it from the backup")
        }
        guard file.format == Self.format else {
            throw KeystoreError(code: .malformed, message: "the keystore \(path) has format \"\(file.format)\", expected \(Self.format)")
        }
        var masters: [UInt8: [KeyRole: MasterKey]] = [:]
        for version in file.versions {
            var roles: [KeyRole: MasterKey] = [:]
            for (name, hex) in version.masters {
                guard let role = KeyRole(rawValue: name), let bytes = Self.bytes(hex), let key = MasterKey(bytes: bytes) else {
                    throw KeystoreError(code: .malformed, message: "the keystore \(path) has a bad master \"\(name)\" in version \(version.version) (roles: terminal, loader, mac; 32 hex digits each)")
                }
                roles[role] = key
            }
            guard roles[.terminal] != nil, roles[.mac] != nil else {
                throw KeystoreError(code: .malformed, message: "version \(version.version) of the keystore \(path) lacks the terminal or mac master; every terminal needs both")
            }
            masters[version.version] = roles
        }
        guard masters[file.currentVersion] != nil else {
            throw KeystoreError(code: .malformed, message: "the keystore \(path) names current version \(file.currentVersion) but holds no such version")
        }
        self.currentVersion = file.currentVersion
        self.masters = masters
    }

    /// Creates a keystore with fresh random masters for every role, version 1, mode 0600 from the first byte
    /// (never readable by others, not even for a moment). Refuses to overwrite an existing file.
    @discardableResult
    public static func create(path: String, roles: Set<KeyRole> = Set(KeyRole.allCases), version: UInt8 = 1) throws -> FileKeystore {
        var masters: [String: String] = [:]
        for role in roles { masters[role.rawValue] = MasterKey.random().bytes.map { String(format: "%02X", $0) }.joined() }
        let file = File(format: format, currentVersion: version,
                        versions: [.init(version: version, created: ISO8601DateFormatter().string(from: Date()), masters: masters)])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(file)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            let code: KeystoreError.Code = errno == EEXIST ? .exists : .unreadable
            throw KeystoreError(code: code, message: "cannot create the keystore \(path): \(String(cString: strerror(errno)))\(code == .exists ? "; it already exists: keep it, or move it away first" : "")")
        }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, data.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == data.count, synced else {
            unlink(path)
            throw KeystoreError(code: .unreadable, message: "cannot write the keystore \(path): disk full or not writable; free space and retry")
        }
        return try FileKeystore(path: path)
    }

    /// Adds a new version with fresh random masters for the roles the current version holds and makes it current
    /// (rotation after a master leaked, e.g. a stolen terminal). The file is replaced atomically, mode 0600.
    @discardableResult
    public static func rotate(path: String) throws -> FileKeystore {
        let existing = try FileKeystore(path: path)
        guard let data = FileManager.default.contents(atPath: path), var file = try? JSONDecoder().decode(File.self, from: data) else {
            throw KeystoreError(code: .unreadable, message: "cannot read the keystore \(path) again to rotate it")
        }
        guard let newest = existing.knownVersions.max(), newest < UInt8.max else {
            throw KeystoreError(code: .malformed, message: "the keystore \(path) has no room for another version")
        }
        let version = newest + 1
        var masters: [String: String] = [:]
        for role in existing.roles(version: existing.currentVersion) {
            masters[role.rawValue] = MasterKey.random().bytes.map { String(format: "%02X", $0) }.joined()
        }
        file.versions.append(.init(version: version, created: ISO8601DateFormatter().string(from: Date()), masters: masters))
        file.currentVersion = version
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let temporary = path + ".rotate-\(getpid())"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            throw KeystoreError(code: .unreadable, message: "cannot write next to the keystore \(path): \(String(cString: strerror(errno)))")
        }
        let bytes = try encoder.encode(file)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, bytes.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw KeystoreError(code: .unreadable, message: "cannot replace the keystore \(path) (disk full?); it is unchanged")
        }
        return try FileKeystore(path: path)
    }

    public func roles(version: UInt8) -> Set<KeyRole> { Set(masters[version]?.keys.map { $0 } ?? []) }

    private func master(_ role: KeyRole, version: UInt8) throws -> MasterKey {
        guard let roles = masters[version] else {
            throw KeystoreError(code: .unknownVersion, message: "key version \(version) is not in the keystore \(path) (known: \(knownVersions.map(String.init).joined(separator: ", "))); update the keystore")
        }
        guard let master = roles[role] else {
            throw KeystoreError(code: .missingRole, message: "the keystore \(path) holds no \(role.rawValue) master for version \(version): this box may not do that (only loading stations hold loader keys)")
        }
        return master
    }

    public func sectorKey(uid: [UInt8], sector: Int, role: KeyRole, version: UInt8) throws -> MifareKey {
        KeyDerivation.sectorKey(try master(role, version: version), uid: uid, sector: sector, role: role, version: version)
    }

    public func macKey(uid: [UInt8], version: UInt8) throws -> SymmetricKey {
        KeyDerivation.macKey(try master(.mac, version: version), uid: uid, version: version)
    }

    static func bytes(_ hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        for i in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[i...i + 1], as: UTF8.self), radix: 16) else { return nil }
            out.append(byte)
        }
        return out
    }
}

extension FileKeystore: CustomStringConvertible {
    /// Ids and versions only.
    public var description: String {
        "keystore \(path): versions \(knownVersions.map { "\($0) (\(roles(version: $0).map(\.rawValue).sorted().joined(separator: "+")))" }.joined(separator: ", ")), current \(currentVersion)"
    }
}
