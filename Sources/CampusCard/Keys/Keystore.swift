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
/// A POS or water controller's file omits "loader" and is exported from the card office's (`export`); a loading
/// station's has all three. Loading refuses a file that is group- or world-accessible, or not a regular file.
/// docs/card-layout.md, "Keystore", is the format's reference.
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

    /// Loads and checks a keystore file. The mode is checked on the descriptor that is then read, so the file
    /// cannot be swapped between the check and the read.
    public init(path: String) throws {
        self.path = path
        let data = try Self.readPrivateFile(path)
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
            guard masters.updateValue(roles, forKey: version.version) == nil else {
                throw KeystoreError(code: .malformed, message: "the keystore \(path) lists version \(version.version) twice; restore it from the backup")
            }
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
        for role in roles { masters[role.rawValue] = hex(MasterKey.random().bytes) }
        let file = File(format: format, currentVersion: version,
                        versions: [.init(version: version, created: ISO8601DateFormatter().string(from: Date()), masters: masters)])
        try writePrivateFile(encode(file), to: path, replacing: false)
        return try FileKeystore(path: path)
    }

    /// Adds a new version with fresh random masters for the roles the current version holds and makes it current
    /// (rotation after a master leaked, e.g. a stolen terminal). The file is replaced atomically, mode 0600.
    @discardableResult
    public static func rotate(path: String) throws -> FileKeystore {
        let existing = try FileKeystore(path: path)
        guard var file = try? JSONDecoder().decode(File.self, from: readPrivateFile(path)) else {
            throw KeystoreError(code: .unreadable, message: "cannot read the keystore \(path) again to rotate it")
        }
        guard let newest = existing.knownVersions.max(), newest < UInt8.max else {
            throw KeystoreError(code: .malformed, message: "the keystore \(path) has no room for another version")
        }
        let version = newest + 1
        var masters: [String: String] = [:]
        for role in existing.roles(version: existing.currentVersion) {
            masters[role.rawValue] = hex(MasterKey.random().bytes)
        }
        file.versions.append(.init(version: version, created: ISO8601DateFormatter().string(from: Date()), masters: masters))
        file.currentVersion = version
        try writePrivateFile(encode(file), to: path, replacing: true)
        return try FileKeystore(path: path)
    }

    /// Writes a keystore holding the same masters as the one at `source`, every version, for `roles` only: how a
    /// POS or water controller gets its file (`[.terminal, .mac]`) from the card office's. Masters created
    /// separately would open no card. The new file is written like `create` (0600, never overwriting).
    @discardableResult
    public static func export(from source: String, to destination: String, roles: Set<KeyRole>) throws -> FileKeystore {
        guard roles.contains(.terminal), roles.contains(.mac) else {
            throw KeystoreError(code: .missingRole, message: "an exported keystore needs the terminal and mac roles: every terminal reads cards and checks MACs")
        }
        let existing = try FileKeystore(path: source)
        guard var file = try? JSONDecoder().decode(File.self, from: readPrivateFile(source)) else {
            throw KeystoreError(code: .unreadable, message: "cannot read the keystore \(source) again to export it")
        }
        for index in file.versions.indices {
            let version = file.versions[index].version
            let missing = roles.subtracting(existing.roles(version: version))
            guard missing.isEmpty else {
                throw KeystoreError(code: .missingRole, message: "the keystore \(source) holds no \(missing.map(\.rawValue).sorted().joined(separator: "+")) master for version \(version): export from the card office's keystore")
            }
            file.versions[index].masters = file.versions[index].masters.filter { KeyRole(rawValue: $0.key).map(roles.contains) ?? false }
        }
        try writePrivateFile(encode(file), to: destination, replacing: false)
        return try FileKeystore(path: destination)
    }

    /// The id of a master (`MasterKey.id`), `nil` when this keystore does not hold it. Not secret.
    public func keyID(role: KeyRole, version: UInt8) -> String? { masters[version]?[role]?.id }

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

    /// Exactly pairs of hex digits (no sign, no spaces, no prefix); `nil` otherwise.
    static func bytes(_ hex: String) -> [UInt8]? {
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            default: return nil
            }
        }
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        for i in stride(from: 0, to: digits.count, by: 2) {
            guard let high = nibble(digits[i]), let low = nibble(digits[i + 1]) else { return nil }
            out.append(high << 4 | low)
        }
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 0x10 ? "0" : "") + String($0, radix: 16, uppercase: true) }.joined()
    }

    static func encode(_ file: File) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(file)
    }

    /// Reads a keystore file through one descriptor: refuses anything but a regular file, and a file that group or
    /// others may access.
    static func readPrivateFile(_ path: String) throws -> Data {
        // O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer before fstat can refuse it; reads of a
        // regular file ignore the flag.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            if errno == EACCES {
                throw KeystoreError(code: .unreadable, message: "cannot read the keystore \(path): \(reason); run as its owner (the daemon's user)")
            }
            throw KeystoreError(code: .unreadable, message: "cannot read the keystore \(path): \(reason); create one with `cardctl keystore create \(path)`")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw KeystoreError(code: .unreadable, message: "the keystore \(path) is not a regular file; give the path of the keystore file")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw KeystoreError(code: .tooOpen, message: "refusing the keystore \(path): group or others may access it (mode \(String(info.st_mode & 0o777, radix: 8))); run `chmod 600 \(path)`")
        }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else {
                throw KeystoreError(code: .unreadable, message: "cannot read the keystore \(path): \(String(cString: strerror(errno))); check the disk")
            }
            if count == 0 { break }
            data.append(contentsOf: buffer[0..<count])
        }
        return data
    }

    /// Writes `data` to `path` so that the path holds either nothing (or its old content) or the whole new file, and
    /// never anything readable by others: a temporary file created 0600 in the same directory, synced, then linked
    /// (`replacing: false`, refusing an existing file) or renamed (`replacing: true`) onto the path; the directory is
    /// synced so the name survives a power cut.
    static func writePrivateFile(_ data: Data, to path: String, replacing: Bool) throws {
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let temporary = "\(directory.isEmpty ? "" : directory + "/").keystore-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw KeystoreError(code: .unreadable, message: "cannot write the keystore \(path): \(String(cString: strerror(errno))) in \(directory.isEmpty ? "/" : directory); choose a writable directory")
        }
        var ok = fchmod(fd, 0o600) == 0
        data.withUnsafeBytes { raw in
            var offset = 0
            while ok && offset < raw.count {
                let written = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { ok = false } else { offset += written }
            }
        }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok else {
            unlink(temporary)
            throw KeystoreError(code: .unreadable, message: "cannot write the keystore \(path): disk full or not writable; free space and retry (nothing was changed)")
        }
        if replacing {
            guard rename(temporary, path) == 0 else {
                let reason = String(cString: strerror(errno))
                unlink(temporary)
                throw KeystoreError(code: .unreadable, message: "cannot replace the keystore \(path): \(reason); it is unchanged")
            }
        } else {
            let linked = link(temporary, path) == 0
            let failure = errno
            unlink(temporary)
            guard linked else {
                if failure == EEXIST {
                    throw KeystoreError(code: .exists, message: "cannot create the keystore \(path): it already exists; keep it, or move it away first")
                }
                throw KeystoreError(code: .unreadable, message: "cannot create the keystore \(path): \(String(cString: strerror(failure)))")
            }
        }
        let directoryFD = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            _ = fsync(directoryFD)
            close(directoryFD)
        }
    }
}

extension FileKeystore: CustomStringConvertible {
    /// Versions, roles and key ids only, never key material:
    /// `keystore PATH: versions 1 (mac+terminal), current 1; ids 1/mac 0A1B2C3D, 1/terminal 4E5F6071`.
    public var description: String {
        let versions = knownVersions.map { "\($0) (\(roles(version: $0).map(\.rawValue).sorted().joined(separator: "+")))" }
        let ids = knownVersions.flatMap { version in
            roles(version: version).sorted { $0.rawValue < $1.rawValue }.map { "\(version)/\($0.rawValue) \(keyID(role: $0, version: version) ?? "?")" }
        }
        return "keystore \(path): versions \(versions.joined(separator: ", ")), current \(currentVersion); ids \(ids.joined(separator: ", "))"
    }
}
