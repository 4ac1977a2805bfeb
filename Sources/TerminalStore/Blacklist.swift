import Foundation
import GRDB

/// One change to the blacklist, as the card office sends it.
public struct BlacklistChange: Sendable, Hashable, Codable {
    public enum Action: String, Sendable, Hashable, Codable, CaseIterable {
        case add, remove
    }
    /// The card's serial (its identity record): the card's key in the blacklist.
    public var serial: UInt32
    /// The card's UID in hex, when known: how a POS, which does not read the serial, finds the card.
    public var uid: String?
    public var action: Action
    public var reason: String

    public init(serial: UInt32, uid: String?, action: Action, reason: String = "") {
        self.serial = serial
        self.uid = uid
        self.action = action
        self.reason = reason
    }
}

/// A card blacklisted now.
public struct BlacklistEntry: Sendable, Hashable, Codable {
    public var serial: UInt32
    public var uid: String?
    /// The blacklist version that added it.
    public var version: Int64
    public var reason: String
    /// When this terminal received that change.
    public var since: Date
}

/// The blacklist this terminal has.
public struct BlacklistStatus: Sendable, Hashable, Codable {
    /// The last version applied (0: none).
    public var version: Int64
    public var updatedAt: Date?
    /// Cards blacklisted now.
    public var count: Int
}

extension TerminalStore {
    /// A UID as stored: upper-case hex of 4, 7 or 10 bytes (MIFARE single, double, triple size). `nil` if not one.
    public static func normalizedUID(_ text: String) -> String? {
        let upper = text.uppercased()
        guard [8, 14, 20].contains(upper.count), upper.allSatisfy({ $0.isHexDigit && $0.isASCII }) else { return nil }
        return upper
    }

    /// Applies a blacklist version in one transaction: every change is kept (history) and the current list updated,
    /// in order (the latest change of a card wins). Refuses (`staleBlacklist`, changing nothing) a version lower than
    /// the store's; the same version again is applied (a version delivered in parts).
    public func applyBlacklist(_ changes: [BlacklistChange], version: Int64) throws {
        var normalized = changes
        for index in normalized.indices {
            guard let uid = normalized[index].uid else { continue }
            guard let clean = Self.normalizedUID(uid) else {
                throw TerminalStoreError(.badInput, "blacklist change \(index + 1) (serial \(changes[index].serial)) has the UID \"\(uid)\", which is not 4, 7 or 10 bytes of hex: fix the list, nothing was applied")
            }
            normalized[index].uid = clean
        }
        try write(.blacklist) { db in
            let current = try Int64.fetchOne(db, sql: "SELECT version FROM blacklistState WHERE id = 1") ?? 0
            guard version >= current else {
                throw TerminalStoreError(.staleBlacklist, "blacklist version \(version) is older than the version \(current) this terminal has: nothing was applied; send the current list")
            }
            let now = storedDate(self.clock())
            let history = try db.cachedStatement(sql: """
                INSERT INTO blacklistChange (cardSerial, cardUID, version, action, reason, receivedAt) VALUES (?, ?, ?, ?, ?, ?)
                """)
            let add = try db.cachedStatement(sql: """
                INSERT INTO blacklistEntry (cardSerial, cardUID, version, reason, since) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (cardSerial) DO UPDATE SET cardUID = COALESCE(excluded.cardUID, cardUID), version = excluded.version,
                    reason = excluded.reason, since = excluded.since
                """)
            let remove = try db.cachedStatement(sql: "DELETE FROM blacklistEntry WHERE cardSerial = ?")
            for change in normalized {
                try history.execute(arguments: [Int64(change.serial), change.uid, version, change.action.rawValue, change.reason, now])
                switch change.action {
                case .add: try add.execute(arguments: [Int64(change.serial), change.uid, version, change.reason, now])
                case .remove: try remove.execute(arguments: [Int64(change.serial)])
                }
            }
            try db.execute(sql: "UPDATE blacklistState SET version = ?, updatedAt = ? WHERE id = 1", arguments: [version, now])
        }
    }

    /// The card's blacklist entry if it is blacklisted now: by serial when given, else by UID (a POS). `nil` if not.
    public func blacklisted(cardUID: String?, serial: UInt32?) throws -> BlacklistEntry? {
        let uid = cardUID.flatMap(Self.normalizedUID)
        return try read { db in
            if let serial, let row = try Row.fetchOne(db.cachedStatement(sql: TapSQL.blacklistBySerial), arguments: [Int64(serial)]) {
                return Self.blacklistEntry(row)
            }
            if let uid, let row = try Row.fetchOne(db.cachedStatement(sql: TapSQL.blacklistByUID), arguments: [uid]) {
                return Self.blacklistEntry(row)
            }
            return nil
        }
    }

    /// The cards blacklisted now, by serial.
    public func blacklistEntries() throws -> [BlacklistEntry] {
        try read { db in try Row.fetchAll(db, sql: "SELECT * FROM blacklistEntry ORDER BY cardSerial").map(Self.blacklistEntry) }
    }

    /// The version applied, when, and how many cards are blacklisted.
    public func blacklistStatus() throws -> BlacklistStatus {
        try read { db in
            let state = try Row.fetchOne(db, sql: "SELECT version, updatedAt FROM blacklistState WHERE id = 1")
            let count = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM blacklistEntry") ?? 0
            return BlacklistStatus(version: state?["version"] ?? 0, updatedAt: (state?["updatedAt"] as Double?).map(date), count: count)
        }
    }

    private static func blacklistEntry(_ row: Row) -> BlacklistEntry {
        BlacklistEntry(serial: UInt32(truncatingIfNeeded: row["cardSerial"] as Int64), uid: row["cardUID"], version: row["version"],
                       reason: row["reason"], since: date(row["since"]))
    }
}
