import ArgumentParser
import CampusCard
import Foundation
import SettlementClient
import SettlementCore
import SmartCard

/// Where the settlement service is and the card office's admin key.
struct OfficeOptions: ParsableArguments {
    @Option(help: "The settlement service's base URL (default: $ONECARD_SETTLEMENT_URL).") var server: String?
    @Option(help: "The admin key file: one line NAME:HEX (default: $ONECARD_ADMIN_KEY). Not readable by others.") var adminKey: String?
    @Flag(help: "Print the service's answer as JSON.") var json = false

    func client() throws -> SettlementClient {
        let environment = ProcessInfo.processInfo.environment
        guard let url = server ?? environment["ONECARD_SETTLEMENT_URL"] else {
            throw CLIError(.badInput, "no settlement service: give --server URL or set ONECARD_SETTLEMENT_URL")
        }
        guard let path = adminKey ?? environment["ONECARD_ADMIN_KEY"] else {
            throw CLIError(.badInput, "no admin key: give --admin-key FILE (a NAME:HEX line, as settlementd's --admin-key-file holds) or set ONECARD_ADMIN_KEY")
        }
        var info = stat()
        guard stat(path, &info) == 0, let data = FileManager.default.contents(atPath: path) else {
            throw CLIError(.badInput, "cannot read the admin key file \(path)")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw CLIError(.badInput, "the admin key file \(path) is readable by others (mode \(String(info.st_mode & 0o777, radix: 8))): chmod 0600 it")
        }
        let line = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        let parts = line.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let key = RequestSigning.Key(header: "admin:" + parts[0]),
              let secret = Hex.decode(parts[1].trimmingCharacters(in: .whitespaces)), secret.count >= 16 else {
            throw CLIError(.badInput, "the admin key file \(path) must hold one line NAME:HEX (a name, a colon, at least 16 bytes of hex)")
        }
        do { return try SettlementClient(baseURL: url, key: key, secret: secret) } catch {
            throw CLIError(.badInput, "\(error)")
        }
    }

    /// One admin call: prints the answer as JSON with --json, else hands it to `show`.
    func call<Body: Encodable, Answer: Codable>(_ method: String, _ path: String, body: Body?, show: (Answer) -> Void) async throws {
        let client = try client()
        let answer: Answer
        do { answer = try await client.call(method, path, body: body) } catch {
            await client.shutdown()
            switch error.kind {
            case .refused: throw CLIError(error.status == 404 ? .badInput : .refused, error.message)
            case .unreachable, .noAnswer, .badAnswer: throw CLIError(.failed, error.message)
            }
        }
        await client.shutdown()
        if json {
            print(String(decoding: try SettlementJSON.encoder().encode(answer), as: UTF8.self))
        } else {
            show(answer)
        }
    }
}

struct NoBody: Codable {}

/// `cardctl office ...`: the card office's side of the settlement service (its admin API).
struct OfficeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "office",
        abstract: "The card office at the settlement service: terminals, accounts, cards (lost, found, freeze, cancel), disputed loads, reports.",
        subcommands: [TerminalAdd.self, TerminalShow.self, AccountOpen.self, AccountShow.self, CardIssue.self, CardStatusChange.self, LoadSettle.self, Daily.self,
                      Statement.self, Flags.self])

    struct TerminalAdd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "terminal-add",
            abstract: "Register a terminal; prints its signing secret once (put it in the box's uplink.secretFile, mode 0600).")
        @OptionGroup var office: OfficeOptions
        @Argument(help: "The terminal's id (1-65535, its config's terminalID).") var id: Int
        @Option(help: "The merchant its sales are booked to.") var merchant: String
        @Flag(help: "A station (the office's counter, a load or water settlement station: a box with the loader master): its loads, subsidies and water settlements are booked as such, and it may do online loads.")
        var loads = false

        struct Request: Codable { var id: Int; var merchant: String; var loads: Bool }

        func run() async throws {
            try await reportingFailures {
                try await office.call("POST", "/v1/admin/terminals", body: Request(id: id, merchant: merchant, loads: loads)) { (answer: TerminalShow.Answer) in
                    print(answer.secret ?? "")
                    printError("cardctl: terminal \(answer.id) registered for \(answer.merchant)\(answer.loads ? " as a station" : ""): its secret is printed once; store it as the box's uplink.secretFile (mode 0600)")
                }
            }
        }
    }

    struct TerminalShow: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "terminal",
            abstract: "Show a terminal, or change it: --disable / --enable, --allow-loads / --deny-loads (a station's loads and other credits are booked as such).")
        enum Change: String, EnumerableFlag { case disable, enable, allowLoads, denyLoads }
        @OptionGroup var office: OfficeOptions
        @Argument(help: "The terminal's id (1-65535).") var id: UInt16
        @Flag(help: "What to change (nothing: show it).") var change: Change?

        struct Answer: Codable { var id: Int; var merchant: String; var enabled: Bool; var loads: Bool; var secret: String? }

        func run() async throws {
            try await reportingFailures {
                let show = { (answer: Answer) in
                    print("terminal \(answer.id): \(answer.merchant), \(answer.enabled ? "enabled" : "disabled"), \(answer.loads ? "a station" : "not a station")")
                }
                if let change {
                    let action = switch change {
                    case .disable: "disable"
                    case .enable: "enable"
                    case .allowLoads: "allow-loads"
                    case .denyLoads: "deny-loads"
                    }
                    try await office.call("POST", "/v1/admin/terminals/\(id)/\(action)", body: NoBody(), show: show)
                } else {
                    try await office.call("GET", "/v1/admin/terminals/\(id)", body: NoBody?.none, show: show)
                }
            }
        }
    }

    struct AccountOpen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "account-open", abstract: "Open a holder's account.")
        @OptionGroup var office: OfficeOptions
        @Argument(help: "The holder's name.") var name: String
        @Option(help: "The opening balance in yuan.") var balance = "0"

        struct Request: Codable { var name: String; var initialBalance: Int }

        func run() async throws {
            try await reportingFailures {
                let amount = try Fen(yuan: balance)
                try await office.call("POST", "/v1/admin/accounts", body: Request(name: name, initialBalance: amount.rawValue)) { (account: Account) in
                    print("account \(account.id): \(account.name), balance \(account.balance.yuan)")
                }
            }
        }
    }

    struct AccountShow: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "account", abstract: "Show an account.")
        @OptionGroup var office: OfficeOptions
        @Argument(help: "The account id.") var id: Int64

        func run() async throws {
            try await reportingFailures {
                try await office.call("GET", "/v1/admin/accounts/\(id)", body: nil as NoBody?) { (account: Account) in
                    print("account \(account.id): \(account.name), balance \(account.balance.yuan)")
                }
            }
        }
    }

    struct CardIssue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "card-issue", abstract: "Record a card issued to an account (its serial and UID).")
        @OptionGroup var office: OfficeOptions
        @Argument(help: "The card's serial.") var serial: UInt32
        @Argument(help: "The card's UID (hex).") var uid: String
        @Argument(help: "The account id.") var account: Int64

        struct Request: Codable { var serial: UInt32; var uid: String; var accountID: Int64 }

        func run() async throws {
            try await reportingFailures {
                try await office.call("POST", "/v1/admin/cards", body: Request(serial: serial, uid: uid.uppercased(), accountID: account)) { (card: SettlementCore.Card) in
                    print("card \(card.serial) (\(card.uid)) issued to account \(card.accountID)")
                }
            }
        }
    }

    struct CardStatusChange: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "card",
            abstract: "Report a card lost, found, frozen or cancelled: the terminals pull the change with their blacklist.")
        enum Change: String, ExpressibleByArgument, CaseIterable { case lost, found, freeze, cancel }
        @OptionGroup var office: OfficeOptions
        @Argument(help: "lost, found, freeze or cancel.") var change: Change
        @Argument(help: "The card's serial.") var serial: UInt32
        @Option(help: "Why (kept with the blacklist row).") var reason: String?

        struct Request: Codable { var reason: String? }
        struct Answer: Codable { var card: SettlementCore.Card; var blacklistVersion: Int64 }

        func run() async throws {
            try await reportingFailures {
                try await office.call("POST", "/v1/admin/cards/\(serial)/\(change.rawValue)", body: Request(reason: reason)) { (answer: Answer) in
                    print("card \(answer.card.serial): \(answer.card.status.rawValue) (blacklist version \(answer.blacklistVersion))")
                }
            }
        }
    }

    struct LoadSettle: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "load-settle",
            abstract: "Settle a disputed online load (its load-mismatch flag) after reading the card: --credited or --not-credited.",
            discussion: """
                --credited: the card carries the load; the hold goes to the card's purse and the load is confirmed. \
                --not-credited: the card does not carry it; the hold goes back to the holder's account (refused when the \
                load's own record was uploaded as done). A load-settled flag keeps the decision and the reason.
                """)
        enum Decision: String, EnumerableFlag { case credited, notCredited }
        @OptionGroup var office: OfficeOptions
        @Argument(help: "The load, as its load-mismatch flag names it: T<terminal>-<reference>.") var reference: String
        @Flag(help: "Whether the card carries the load.") var decision: Decision
        @Option(help: "What the office found on the card (kept with the decision).") var reason: String

        struct Request: Codable { var credited: Bool; var reason: String }

        func validate() throws {
            // The reference goes into the request's path: nothing there may change the path.
            guard !reference.isEmpty, reference.unicodeScalars.allSatisfy({ $0 == "-" || $0 == "_" || ($0.isASCII && $0.properties.isAlphabetic) || ("0"..."9").contains($0) }) else {
                throw ValidationError("the reference is T<terminal>-<reference> (letters, digits, - and _), as the load-mismatch flag shows it")
            }
        }

        func run() async throws {
            try await reportingFailures {
                try await office.call("POST", "/v1/admin/loads/\(reference)/settle",
                                      body: Request(credited: decision == .credited, reason: reason)) { (answer: LoadState) in
                    print("load \(answer.reference) on card \(answer.cardSerial), \(answer.amount.yuan): \(answer.phase.rawValue)")
                }
            }
        }
    }

    struct Daily: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "daily", abstract: "The daily settlement: booked sales per merchant and terminal on a business day (UTC+8).")
        @OptionGroup var office: OfficeOptions
        @Argument(help: "The day, YYYY-MM-DD (default: today, UTC+8).") var day: String?

        struct Answer: Codable { var day: String; var totals: [DailyTotal] }

        func run() async throws {
            try await reportingFailures {
                var calendar = Calendar(identifier: .gregorian)
                calendar.timeZone = TimeZone(secondsFromGMT: 8 * 3_600)!
                let today = calendar.dateComponents([.year, .month, .day], from: Date())
                let day = day ?? String(format: "%04d-%02d-%02d", today.year!, today.month!, today.day!)
                try await office.call("GET", "/v1/admin/reports/daily?day=\(day)", body: nil as NoBody?) { (answer: Answer) in
                    print("daily settlement \(answer.day)")
                    print("merchant              terminal   count        total")
                    for line in answer.totals {
                        let terminal = line.terminalID.map { "\($0.rawValue)" } ?? "all"
                        print(line.merchant.padding(toLength: 20, withPad: " ", startingAt: 0) + "  " + terminal.padding(toLength: 8, withPad: " ", startingAt: 0)
                              + String(format: " %7d", line.count) + "  " + String(repeating: " ", count: max(0, 11 - line.total.yuan.count)) + line.total.yuan)
                    }
                    if answer.totals.isEmpty { print("(no booked sales)") }
                }
            }
        }
    }

    struct Statement: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "statement", abstract: "A card's statement: every ledger entry on its purse and water wallet.")
        @OptionGroup var office: OfficeOptions
        @Argument(help: "The card's serial.") var serial: UInt32

        struct Answer: Codable { var serial: UInt32; var entries: [LedgerEntry] }

        func run() async throws {
            try await reportingFailures {
                try await office.call("GET", "/v1/admin/reports/cards/\(serial)/statement", body: nil as NoBody?) { (answer: Answer) in
                    for entry in answer.entries {
                        let terminal = entry.terminalID.map { " terminal \($0.rawValue) #\(entry.terminalSequence ?? 0)" } ?? ""
                        print("\(entry.bookedAt) \(entry.account) \(entry.amount.yuan) \(entry.kind)\(terminal)")
                    }
                    if answer.entries.isEmpty { print("(no entries)") }
                }
            }
        }
    }

    struct Flags: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "flags", abstract: "What an operator must look at: conflicts, counter anomalies, undetermined records.")
        @OptionGroup var office: OfficeOptions
        @Option(help: "At most this many, newest first.") var limit = 100

        struct Answer: Codable { var flags: [OperatorFlag] }

        func run() async throws {
            try await reportingFailures {
                try await office.call("GET", "/v1/admin/reports/flags?limit=\(limit)", body: nil as NoBody?) { (answer: Answer) in
                    for flag in answer.flags { print("\(flag.raisedAt) \(flag.code): \(flag.message)") }
                    if answer.flags.isEmpty { print("(no flags)") }
                }
            }
        }
    }
}
