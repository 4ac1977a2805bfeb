import ArgumentParser
import Foundation
import TerminalStore

/// `cardctl blacklist`: the blacklist kept in the terminal store.
struct BlacklistCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blacklist",
        abstract: "Import or list the blacklist kept in the terminal store.",
        discussion: """
            The file is CSV (RFC 4180 quoting), one change per line: version,serial,uid,action,reason. A first line \
            "version,serial,uid,action,reason" is a header; blank lines and lines starting with # are skipped. version: \
            the blacklist version (1 or more, not lower than the store's); serial: the card serial (decimal, 0-4294967295); \
            uid: the card UID in hex (8, 14 or 20 digits) or empty; action: add or remove; reason: free text. Versions \
            are applied in ascending order, each in one transaction; a bad line refuses the whole file, naming the line.
            """,
        subcommands: [Import.self, List.self]
    )

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Apply a blacklist file (CSV: version,serial,uid,action,reason).")
        @Argument(help: "The blacklist CSV file.") var file: String
        @OptionGroup var store: StoreOptions

        func run() throws {
            try reportingStoreFailures {
                guard let data = FileManager.default.contents(atPath: file) else {
                    throw CLIError(.badInput, "cannot read \(file): no such file or no permission; give the blacklist CSV")
                }
                let lines = try BlacklistFile.parse(String(decoding: data, as: UTF8.self), name: file)
                let opened = try store.open(create: true)
                let current = try opened.blacklistStatus().version
                if let stale = lines.first(where: { $0.version < current }) {
                    throw CLIError(.badInput, "\(file) line \(stale.line): version \(stale.version) is older than the version \(current) this terminal has; nothing was applied: send the current list")
                }
                let versions = Dictionary(grouping: lines, by: \.version).sorted { $0.key < $1.key }
                for (version, changes) in versions {
                    try opened.applyBlacklist(changes.map(\.change), version: version)
                }
                let status = try opened.blacklistStatus()
                if store.json { return try printStoreJSON(status) }
                let adds = lines.filter { $0.change.action == .add }.count
                print("applied \(lines.count) changes (\(adds) add, \(lines.count - adds) remove) in \(versions.count) version\(versions.count == 1 ? "" : "s"): now version \(status.version), \(status.count) cards blacklisted")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the cards blacklisted now, with the version.")
        @OptionGroup var store: StoreOptions

        func run() throws {
            try reportingStoreFailures {
                let opened = try store.open(create: false)
                let status = try opened.blacklistStatus()
                let entries = try opened.blacklistEntries()
                if store.json {
                    struct Listing: Encodable { var status: BlacklistStatus; var entries: [BlacklistEntry] }
                    return try printStoreJSON(Listing(status: status, entries: entries))
                }
                print("version \(status.version)\(status.updatedAt.map { ", received \($0.formatted(.iso8601))" } ?? ""): \(status.count) cards")
                if !entries.isEmpty { print("serial      card UID              version  reason") }
                for entry in entries {
                    print(String(entry.serial).rightPadded(to: 12) + (entry.uid ?? "-").rightPadded(to: 22) + String(entry.version).rightPadded(to: 9) + entry.reason)
                }
            }
        }
    }
}

/// The blacklist CSV file (see `BlacklistCommand`'s discussion).
enum BlacklistFile {
    struct Line {
        var line: Int
        var version: Int64
        var change: BlacklistChange
    }

    static let header = ["version", "serial", "uid", "action", "reason"]

    /// Every change of the file, or a `CLIError(.badInput)` naming the first bad line.
    static func parse(_ text: String, name: String) throws -> [Line] {
        var lines: [Line] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = index + 1
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if line.trimmingCharacters(in: .whitespaces).isEmpty || line.hasPrefix("#") { continue }
            func bad(_ why: String) -> CLIError {
                CLIError(.badInput, "\(name) line \(number): \(why); nothing was applied: fix the line (format: version,serial,uid,action,reason)")
            }
            guard let fields = csvFields(String(line)) else { throw bad("an unterminated quote") }
            if number == 1 || lines.isEmpty, fields.map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) == header { continue }
            guard fields.count == 5 else { throw bad("\(fields.count) fields, expected 5") }
            let trimmed = fields.map { $0.trimmingCharacters(in: .whitespaces) }
            guard let version = Int64(trimmed[0]), version >= 1 else { throw bad("version \"\(trimmed[0])\" is not a number of 1 or more") }
            guard let serial = UInt32(trimmed[1]) else { throw bad("serial \"\(trimmed[1])\" is not a card serial (0-4294967295)") }
            var uid: String?
            if !trimmed[2].isEmpty {
                guard let normalized = TerminalStore.normalizedUID(trimmed[2]) else { throw bad("UID \"\(trimmed[2])\" is not 8, 14 or 20 hex digits") }
                uid = normalized
            }
            guard let action = BlacklistChange.Action(rawValue: trimmed[3].lowercased()) else { throw bad("action \"\(trimmed[3])\" is neither add nor remove") }
            lines.append(Line(line: number, version: version, change: BlacklistChange(serial: serial, uid: uid, action: action, reason: fields[4])))
        }
        return lines
    }

    /// One CSV record's fields (RFC 4180: "..." quotes, "" inside them is a quote); nil for an unterminated quote.
    static func csvFields(_ line: String) -> [String]? {
        var fields: [String] = [], field = "", quoted = false, atStart = true
        var characters = line.makeIterator()
        while let character = characters.next() {
            if quoted {
                if character == "\"" {
                    // A doubled quote is a quote; a single one ends the quoted part.
                    var lookahead = characters
                    if lookahead.next() == "\"" { field.append("\""); characters = lookahead } else { quoted = false }
                } else {
                    field.append(character)
                }
            } else if character == "\"" && atStart {
                quoted = true
                atStart = false
            } else if character == "," {
                fields.append(field)
                field = ""
                atStart = true
            } else {
                field.append(character)
                atStart = false
            }
        }
        if quoted { return nil }
        fields.append(field)
        return fields
    }
}
