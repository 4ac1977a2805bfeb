import ArgumentParser
import CampusCard
import CardReader
import CardSession
import Foundation
import MifareClassic
import TerminalStore

/// `cardctl card ...`: the campus card application.
struct Card: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Issue, show, debit and load campus cards.",
        subcommands: [Issue.self, Show.self, Debit.self, Load.self, Water.self, Lock.self, Unlock.self, Cancel.self, Rekey.self, Repair.self,
                      SetLimits.self, SetPIN.self, ResetPINTries.self])

    struct Common: ParsableArguments {
        @OptionGroup var reader: ReaderOptions
        @Option(help: "The keystore file (cardctl keystore create).") var keystore: String
        @Option(help: "This terminal's store (SQLite): the durable journal of its card writes. An earlier cardctl's JSON-lines journal at the default place is imported once.")
        var journal = TerminalStore.defaultPath()
        @Option(help: "This terminal's id, 1-65535, unique per box (recorded on the card; with the journal's sequence it names each transaction). Required to move money.",
                transform: Numbers.terminalID)
        var terminalID: UInt16?

        /// `movesMoney`: debits, loads and water operations record intents, which must name a real terminal.
        func open(movesMoney: Bool) throws -> (any Keystore, Terminal) {
            let store: FileKeystore
            do { store = try FileKeystore(path: keystore) } catch let error as KeystoreError { throw CLIError(.badInput, error.message) }
            let file = try Card.openStore(journal)
            if movesMoney && (terminalID ?? 0) == 0 {
                throw CLIError(.badInput, "say which terminal this is: --terminal-id N (1-65535, unique per box; the settlement service tells transactions apart by terminal id and sequence)")
            }
            return (store, Terminal(id: TerminalID(terminalID ?? 0), journal: file,
                                    lastSeenCounter: { uid in (try? file.lastSeenCounter(cardUID: uid)) ?? nil }))
        }
    }

    /// Whether `path` is a regular file that starts like a JSON-lines journal (reads one byte; never blocks on a FIFO).
    static func isJSONLines(_ path: String) -> Bool {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              attributes[.type] as? FileAttributeType == .typeRegular,
              let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        return (try? handle.read(upToCount: 1))?.first == UInt8(ascii: "{")
    }

    /// Every intent a terminal recorded: from its store, or from an earlier cardctl's JSON-lines journal.
    static func records(at path: String) throws -> [TransactionIntent] {
        if Card.isJSONLines(path) {
            return try FileTerminalJournal(path: path).entries().map(\.intent)
        }
        let store = try TerminalStore(path: path, options: TerminalStore.Options(createIfMissing: false))
        defer { try? store.close() }
        var intents: [TransactionIntent] = []
        try store.forEachEntry { intents.append($0.intent) }
        return intents
    }

    /// Prints a command's result: JSON with --json, else the line.
    static func report(_ common: Common, _ fields: [String: String], _ line: String) {
        if common.reader.json { try? printJSON(fields) } else { print(line) }
    }

    static func settled(_ common: Common, _ result: WaterSettlementResult) {
        if let unverified = result.unverifiedBalance {
            reportDone(common, ["result": "water-reset", "consumptionYuan": "unknown", "unverifiedBalanceYuan": unverified.yuan,
                                "refillYuan": result.refill.yuan, "waterYuan": result.state.balance.yuan],
                   "the water wallet's record was torn and nothing vouched for its balance: reset to \(result.state.balance.yuan) yuan; the \(unverified.yuan) yuan found and the consumption since the last refill are for the settlement service to reconcile", warnings: result.state.warnings)
            return
        }
        let consumption = result.consumption?.yuan ?? "unknown"
        reportDone(common, ["result": "water-settled", "consumptionYuan": consumption, "refillYuan": result.refill.yuan,
                            "waterYuan": result.state.balance.yuan],
                   "consumption \(consumption) yuan charged; refilled \(result.refill.yuan) yuan: water balance \(result.state.balance.yuan) yuan",
                   warnings: result.state.warnings)
    }

    /// An amount typed in yuan; refusals are bad input.
    static func parse(_ amount: String) throws -> Fen {
        do { return try Fen(yuan: amount) } catch { throw CLIError(.badInput, "\(error)") }
    }

    /// An amount a debit or load moves: 0.00 is a typing error (exit 6), not the card's refusal.
    static func parseMoved(_ amount: String) throws -> Fen {
        let fen = try parse(amount)
        guard fen > .zero else { throw CLIError(.badInput, "an amount of \(fen.yuan) yuan moves nothing: give at least 0.01") }
        return fen
    }

    /// Where cardctl kept its JSON-lines journal before the terminal store: imported once into the default store.
    static var legacyJournal: String {
        (ProcessInfo.processInfo.environment["HOME"] ?? "/tmp") + "/.local/state/onecard/cardctl-journal.jsonl"
    }

    /// Opens the terminal store at `path` (the default one imports an earlier cardctl's JSON-lines journal once).
    /// A JSON-lines journal given as --journal is refused with the command that imports it.
    static func openStore(_ path: String) throws -> TerminalStore {
        if Card.isJSONLines(path) {
            throw CLIError(.badInput, "--journal \(path) is a JSON-lines journal of an earlier cardctl: import it into a terminal store first (`cardctl journal import \(path) --journal STORE.sqlite`), then give --journal STORE.sqlite")
        }
        do {
            if path == TerminalStore.defaultPath() {
                let (store, report) = try TerminalStore.open(path: path, importingLegacyJournal: legacyJournal)
                if let report { printError("cardctl: imported the earlier journal \(legacyJournal) into \(path): \(report)") }
                return store
            }
            return try TerminalStore(path: path)
        } catch let error as TerminalStoreError {
            throw storeFailure(error)
        }
    }

    /// Runs campus card operations in one card session. A money operation (`movesMoney`) that fails is reported by
    /// what happened to its money, from the session's report: done (its commit landed before the failure: printed
    /// as done, exit 0), undetermined (its commit write went unanswered: exit 7), or not done (the error's status);
    /// with --json each prints `{"outcome": ...}` on stdout.
    static func withOperations<T: Sendable>(_ common: Common, movesMoney: Bool = false,
                                            _ body: @escaping @Sendable (CampusCardOperations, Terminal) throws -> T) async throws -> T {
        let (keystore, terminal) = try common.open(movesMoney: movesMoney)
        let report: OperationReport<T>
        do {
            let connection = try await CardConnection.open(common.reader)
            report = await connection.campusSession(keystore: keystore, terminal: terminal, body)
        } catch {
            report = OperationReport(value: nil, error: error, intents: [], decided: [])
        }
        reportDecisions(report)
        if let value = report.value { return value }
        let error = report.error ?? CLIError(.failed, "the card session returned nothing")
        guard movesMoney else { throw error }
        let (status, message) = explain(error)
        if let done = report.doneIntent {
            let line = "\(done.intent.kind.rawValue) of \(done.intent.amount.yuan) yuan done: balance \(done.balanceAfter.yuan) yuan, counter \(done.counterAfter)"
            reportDone(common, ["result": done.intent.kind.rawValue, "amountYuan": done.intent.amount.yuan, "balanceYuan": done.balanceAfter.yuan,
                                "counter": "\(done.counterAfter)"], line, warnings: [message])
            throw ExitCode.success
        }
        let undetermined = report.outcome == .undetermined
        if common.reader.json {
            try? printJSON(MoneyReport(outcome: undetermined ? "undetermined" : "not-done", fields: ["error": message], warnings: []))
        }
        if undetermined { throw CLIError(.undetermined, message) }
        throw CLIError(status, message)
    }

    /// A money command's result as printed with --json: its outcome, its fields, and what failed after a done
    /// operation's commit.
    struct MoneyReport: Encodable {
        var outcome: String
        var fields: [String: String]
        var warnings: [String]

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Key.self)
            try container.encode(outcome, forKey: Key(stringValue: "outcome"))
            if !warnings.isEmpty { try container.encode(warnings, forKey: Key(stringValue: "warnings")) }
            for (key, value) in fields { try container.encode(value, forKey: Key(stringValue: key)) }
        }
    }

    /// Prints a done money operation: its line (or JSON with `"outcome": "done"`), and on stderr each warning.
    static func reportDone(_ common: Common, _ fields: [String: String], _ line: String, warnings: [String]) {
        for warning in warnings { printError("cardctl: warning: \(warning)") }
        if common.reader.json { try? printJSON(MoneyReport(outcome: "done", fields: fields, warnings: warnings)) } else { print(line) }
    }

    /// Says on stderr what this command decided about the terminal's operations: earlier interrupted ones, decided
    /// when their card came back, and — when the card left mid-command — whether this one was committed first.
    static func reportDecisions<T>(_ report: OperationReport<T>) {
        func what(_ intent: TransactionIntent) -> String {
            "\(intent.kind.rawValue) of \(intent.amount.yuan) yuan (terminal sequence \(intent.terminalSequence))"
        }
        for decided in report.decided {
            switch decided.outcome {
            case .done(let balance, _): printError("interrupted \(what(decided.intent)): done (balance after it: \(balance.yuan) yuan)")
            case .notDone: printError("interrupted \(what(decided.intent)): not done, nothing moved")
            case .undetermined: printError("interrupted \(what(decided.intent)): undetermined, the card no longer shows it; the settlement service decides")
            }
        }
        guard report.error != nil else { return }
        for (intent, outcome) in report.intents {
            switch outcome {
            case .done(let balance, _): printError("this \(what(intent)) was committed before the card left: done, balance \(balance.yuan) yuan; any terminal completes the card's repair at its next tap")
            case nil: printError("this \(what(intent)) may or may not have happened: tap the card again here (`cardctl card show` with this --journal) to learn which, before repeating it")
            case .notDone, .undetermined: break
            }
        }
    }

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a blank card (transport keys) with zero balances.")
        @OptionGroup var common: Common
        @Option(help: "Card serial number, 0-4294967295.", transform: Numbers.cardNumber("serial")) var serial: UInt32
        @Option(help: "Account id, 0-4294967295.", transform: Numbers.cardNumber("account")) var account: UInt32
        @Option(help: "staff, student, identity or temporary.") var type: String
        @Option(help: "Expiry date YYYY-MM-DD, at most 2179-06-06 (the card holds a 16-bit day; default: 4 years).") var expires: String?

        func run() async throws {
            try await reportingFailures {
                guard let cardType = Identity.CardType.allCases.first(where: { $0.name == type }) else {
                    throw CLIError(.badInput, "unknown card type \"\(type)\": use staff, student, identity or temporary")
                }
                let today = CardDay(Date())
                var expiry = CardDay(rawValue: UInt16(clamping: Int(today.rawValue) + 4 * 365))
                if let expires {
                    let formatter = ISO8601DateFormatter()
                    formatter.formatOptions = [.withFullDate]
                    formatter.timeZone = TimeZone(secondsFromGMT: 8 * 3600)
                    guard let date = formatter.date(from: expires) else {
                        throw CLIError(.badInput, "--expires \"\(expires)\" is not a date YYYY-MM-DD: give the expiry date, e.g. 2030-07-31")
                    }
                    // The card stores a u16 of days since 2000-01-01: a later date would be stored as another one.
                    let day = CardDay(exactly: date)
                    guard day != nil || date < Date() else {
                        throw CLIError(.badInput, "--expires \(expires) is beyond \(CardDay.last), the last day the card's 16-bit date can hold: give an earlier date")
                    }
                    guard let day, day > today else {
                        throw CLIError(.badInput, "--expires \(expires) is not in the future (today is \(today)): give a later date")
                    }
                    expiry = day
                }
                let identity = Identity(serial: serial, account: account, type: cardType, keyVersion: 1, issued: today, expires: expiry)
                try await Card.withOperations(common) { ops, _ in try ops.issue(identity) }
                Card.report(common, ["result": "issued", "serial": "\(serial)", "account": "\(account)", "type": cardType.name, "expires": "\(expiry)"],
                            "issued card serial \(serial), account \(account), \(cardType.name), expires \(expiry)")
            }
        }
    }

    struct Report: Encodable {
        var uid: String
        var serial: UInt32
        var account: UInt32
        var type: String
        var status: String
        var expires: String
        var keyVersion: Int
        /// "v1 (6-entry log ring, sectors 4–5)" or "v2 (24-entry log ring, sectors 4–11)", from the purse value blocks.
        var layout = "?"
        var balanceYuan: String
        var balanceFen: Int
        var counter: Int
        var lastOperation: String
        var debitedTodayYuan: String
        var perTransactionLimitYuan: String
        var dailyLimitYuan: String
        /// "not set", "set, 3 tries left", "blocked": never the verifier.
        var pin: String
        var resolution: String
        var waterYuan: String
        var waterCapYuan: String
        var waterUsedSinceRefillYuan: String
        var mac: String
        var log: [String]
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Identity, balance, counters, MAC status and log of a card.")
        @OptionGroup var common: Common

        func run() async throws {
            try await reportingFailures {
                let (report, waterInterrupted) = try await Card.withOperations(common) { ops, terminal in
                    var waterInterrupted = false
                    try ops.checkApplication()
                    let identity = try ops.readIdentity()
                    var report = Report(
                        uid: try ops.session.uid().map { String(format: "%02X", $0) }.joined(), serial: identity.serial, account: identity.account, type: identity.type.name,
                        status: identity.status.name, expires: identity.expires.description, keyVersion: Int(identity.keyVersion),
                        balanceYuan: "?", balanceFen: -1, counter: -1, lastOperation: "?", debitedTodayYuan: "?",
                        perTransactionLimitYuan: identity.holder.effectiveLimits.perTransaction.yuan,
                        dailyLimitYuan: identity.holder.effectiveLimits.daily.yuan,
                        pin: identity.holder.pinVerifier == nil ? "not set" : "set", resolution: "?",
                        waterYuan: "?", waterCapYuan: "?", waterUsedSinceRefillYuan: "?", mac: "valid", log: [])
                    // A MAC mismatch is shown, not hidden: the technician sees what was tampered with.
                    var mismatches: [String] = []
                    do {
                        let state = try ops.tap(terminal: terminal)
                        // A status change torn between its two writes: decided from the purse record (loader role).
                        report.status = try ops.reconcileStatus(identity, with: state).status.name
                        report.balanceYuan = state.balance.yuan
                        report.balanceFen = state.balance.rawValue
                        report.counter = Int(state.record.counter)
                        report.lastOperation = "\(state.record.lastOperation)"
                        // "unknown" after a rebuilt record: the daily limit then asks for the PIN for the rest of the day.
                        let today = state.record.lastDay == CardDay(Date()) ? state.record.debitedToday : .zero
                        report.debitedTodayYuan = today == PurseRecord.unknownDebitedToday ? "unknown" : today.yuan
                        report.resolution = state.resolution.rawValue
                        if identity.holder.pinVerifier != nil {
                            let left = PINTries.blocked - state.record.wrongPINTries
                            report.pin = left == 0 ? "blocked (the card office resets it)" : "set, \(left) \(left == 1 ? "try" : "tries") left"
                        }
                        let macKey = try ops.keystore.macKey(uid: state.uid, version: state.macVersion)
                        report.layout = "v\(state.logRing.layout) (\(state.logRing.slots)-entry log ring, sectors \(state.logRing.sectors.first!)–\(state.logRing.sectors.last!))"
                        report.log = try ops.readLog(uid: state.uid, macKey: macKey, version: identity.keyVersion, ring: state.logRing).map {
                            "#\($0.counter) \($0.operation) \($0.amount.yuan) -> \($0.balanceAfter.yuan) (\($0.terminal))"
                        }
                    } catch let error as CardOperationError where error.code == .tampered {
                        mismatches.append("purse")
                    }
                    do {
                        let water = try ops.waterTap(terminal: terminal)  // restores a record this terminal's own write tore
                        report.waterYuan = water.balance.yuan
                        report.waterCapYuan = water.record.cap.yuan
                        report.waterUsedSinceRefillYuan = Fen(water.record.balanceAfterRefill.rawValue - water.balance.rawValue).yuan
                    } catch let error as CardOperationError where error.code == .tampered || error.code == .waterInterrupted {
                        mismatches.append("water wallet")
                        if error.code == .waterInterrupted { waterInterrupted = true }
                    }
                    if !mismatches.isEmpty { report.mac = "MISMATCH in " + mismatches.joined(separator: " and ") }
                    return (report, waterInterrupted)
                }
                if common.reader.json {
                    try printJSON(report)
                } else {
                    print("card      \(report.uid)  serial \(report.serial)  account \(report.account)  \(report.type)  \(report.status)  expires \(report.expires)  key v\(report.keyVersion)")
                    print("purse     \(report.balanceYuan) yuan  counter \(report.counter)  last \(report.lastOperation)  today \(report.debitedTodayYuan)\(report.debitedTodayYuan == "unknown" ? "" : " yuan")  \(report.resolution)")
                    print("limits    \(report.perTransactionLimitYuan) yuan per transaction, \(report.dailyLimitYuan) yuan a day  PIN \(report.pin)")
                    print("water     \(report.waterYuan) yuan of \(report.waterCapYuan)  used since the last refill \(report.waterUsedSinceRefillYuan)")
                    print("MAC       \(report.mac)")
                    print("layout    \(report.layout)")
                    for line in report.log { print("log       \(line)") }
                }
                if report.mac == "MISMATCH in water wallet" && waterInterrupted {
                    throw CLIError(.refused, "no record on the card vouches for the water wallet's balance (a write torn mid-way, or an altered card): tap it at the water controller where it was interrupted, or at a settlement station, which resets the wallet")
                }
                if report.mac != "valid" {
                    throw CLIError(.refused, "the card's \(report.mac.dropFirst("MISMATCH in ".count)) does not match its MAC: it was altered without the MAC key; keep the card and report it")
                }
            }
        }
    }

    struct Debit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Debit the purse by AMOUNT yuan (e.g. 12.50).")
        @OptionGroup var common: Common
        @Argument(help: "Amount in yuan, at most two decimals.") var amount: String
        @Option(help: "The holder's PIN, checked against the card when the debit is over a holder's limit. Visible in the process list: prefer --pin-stdin.")
        var pin: String?
        @Flag(help: "Read the holder's PIN from the first line of stdin.") var pinStdin = false

        func validate() throws {
            if pin != nil && pinStdin { throw ValidationError("give the PIN either with --pin or with --pin-stdin, not both") }
        }

        func run() async throws {
            try await reportingFailures {
                let fen = try Card.parseMoved(amount)
                let pin = try pinStdin ? PINInput.read(fromStdin: true, confirm: false) : self.pin.map(PINInput.parse)
                let state = try await Card.withOperations(common, movesMoney: true) { ops, terminal in try ops.debit(fen, terminal: terminal, pin: pin) }
                Card.reportDone(common, ["result": "debited", "amountYuan": fen.yuan, "balanceYuan": state.balance.yuan, "counter": "\(state.record.counter)"],
                                "debited \(fen.yuan) yuan: balance \(state.balance.yuan) yuan, counter \(state.record.counter)", warnings: state.warnings)
            }
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Load AMOUNT yuan onto the purse (needs the loader master).")
        @OptionGroup var common: Common
        @Argument(help: "Amount in yuan, at most two decimals.") var amount: String
        @Flag(help: "A subsidy (补助) rather than an account top-up (圈存).") var subsidy = false

        func run() async throws {
            try await reportingFailures {
                let fen = try Card.parseMoved(amount)
                let kind: TransactionIntent.Kind = subsidy ? .purseSubsidy : .purseLoad
                let state = try await Card.withOperations(common, movesMoney: true) { ops, terminal in try ops.load(fen, terminal: terminal, kind: kind) }
                Card.reportDone(common, ["result": "loaded", "amountYuan": fen.yuan, "balanceYuan": state.balance.yuan, "counter": "\(state.record.counter)"],
                                "loaded \(fen.yuan) yuan: balance \(state.balance.yuan) yuan, counter \(state.record.counter)", warnings: state.warnings)
            }
        }
    }
}

extension Card {
    struct Lock: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Lock a card on the card itself (lost, frozen or cancelled): every terminal refuses it, blacklist or not.")
        @OptionGroup var common: Common
        @Option(help: "lost, frozen or cancelled.") var reason = "lost"

        func run() async throws {
            try await reportingFailures {
                guard let status = Identity.Status.allCases.first(where: { $0.name == reason }), status != .normal else {
                    throw CLIError(.badInput, "--reason must be lost, frozen or cancelled")
                }
                try await Card.withOperations(common) { ops, _ in _ = try ops.setStatus(status) }
                Card.report(common, ["result": "locked", "status": status.name], "card locked: \(status.name)")
            }
        }
    }

    struct Unlock: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Unlock a card (status normal).")
        @OptionGroup var common: Common

        func run() async throws {
            try await reportingFailures {
                try await Card.withOperations(common) { ops, _ in _ = try ops.setStatus(.normal) }
                Card.report(common, ["result": "unlocked", "status": "normal"], "card unlocked")
            }
        }
    }
}

extension Card {
    struct Water: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The 10-yuan water wallet: debit (water controller), settle and refill (settlement station).",
            subcommands: [WaterDebit.self, WaterSettle.self, WaterRefill.self])
    }

    struct WaterDebit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "debit", abstract: "Debit AMOUNT yuan from the water wallet.")
        @OptionGroup var common: Common
        @Argument(help: "Amount in yuan, e.g. 0.05.") var amount: String

        func run() async throws {
            try await reportingFailures {
                let fen = try Card.parseMoved(amount)
                let state = try await Card.withOperations(common, movesMoney: true) { ops, terminal in try ops.waterDebit(fen, terminal: terminal) }
                Card.reportDone(common, ["result": "water-debited", "amountYuan": fen.yuan, "waterYuan": state.balance.yuan],
                                "water debited \(fen.yuan) yuan: water balance \(state.balance.yuan) yuan", warnings: state.warnings)
            }
        }
    }

    struct WaterSettle: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "settle", abstract: "Settle the consumption since the last refill and refill to the cap (needs the loader master).")
        @OptionGroup var common: Common
        @Option(help: "Settlement reference recorded on the card, unique per settlement, 1-2147483647 (default: this terminal's id and sequence).",
                transform: Numbers.settlementReference)
        var reference: UInt32?

        func run() async throws {
            try await reportingFailures {
                let reference = reference
                let result = try await Card.withOperations(common, movesMoney: true) { ops, terminal in try ops.waterSettle(terminal: terminal, reference: reference) }
                Card.settled(common, result)
            }
        }
    }

    struct WaterRefill: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "refill", abstract: "Settle and refill by at most AMOUNT yuan (a partial refill, e.g. when the account is short).")
        @OptionGroup var common: Common
        @Argument(help: "The most to refill, in yuan.") var amount: String
        @Option(help: "Settlement reference recorded on the card, unique per settlement, 1-2147483647 (default: this terminal's id and sequence).",
                transform: Numbers.settlementReference)
        var reference: UInt32?

        func run() async throws {
            try await reportingFailures {
                let maximum = try Card.parse(amount)
                let reference = reference
                let result = try await Card.withOperations(common, movesMoney: true) { ops, terminal in
                    try ops.waterSettle(terminal: terminal, reference: reference, maximumRefill: maximum)
                }
                Card.settled(common, result)
            }
        }
    }
}

extension Card {
    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cancel a card (status cancelled, refused everywhere) and print the balances to refund to the account.")
        @OptionGroup var common: Common

        func run() async throws {
            try await reportingFailures {
                let (purse, water) = try await Card.withOperations(common, movesMoney: true) { ops, terminal in
                    let state = try ops.setStatus(.cancelled)
                    // The water wallet is settled (its consumption charged) and emptied back to the account.
                    do {
                        return (state.balance, try ops.emptyWater(terminal: terminal))
                    } catch {
                        throw CLIError(explain(error).0, "the card is cancelled, but its water wallet was not emptied (\(explain(error).1)): run `card cancel` again")
                    }
                }
                let consumption = water.consumption?.yuan ?? "unknown"
                Card.reportDone(common, ["result": "cancelled", "refundPurseYuan": purse.yuan, "refundWaterYuan": water.refund.yuan,
                                     "waterConsumptionYuan": consumption],
                            "card cancelled: refund \(purse.yuan) yuan (purse) + \(water.refund.yuan) yuan (water wallet) to the account; water consumption \(consumption) yuan charged", warnings: water.state.warnings)
            }
        }
    }
}

extension Card {
    struct Rekey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-key the card to the keystore's current version (after `cardctl keystore rotate`); needs the loader masters.",
            discussion: "Restartable: a re-key interrupted by a card pulled away is finished by running it again. Hold the card still: a sector trailer torn mid-write locks that sector for good.")
        @OptionGroup var common: Common

        func run() async throws {
            try await reportingFailures {
                let sectors = try await Card.withOperations(common) { ops, _ in try ops.rekey() }
                Card.report(common, ["result": "rekeyed", "sectors": sectors.sorted().map(String.init).joined(separator: ",")],
                            sectors.isEmpty ? "already on the current key version" : "re-keyed sectors \(sectors.sorted().map(String.init).joined(separator: ", "))")
            }
        }
    }
}

extension Card {
    struct Repair: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Card office: bring a torn or half-written card back to a valid state, money conserved, and say what was decided (needs the loader master).",
            discussion: "Each part is decided on its own: the purse (from the card, its log, or a terminal's record of the state before a torn write), the identity (a block torn by a status change, from the purse record's status), the water wallet (from the card or a terminal's record; else emptied, its unverifiable value left to the settlement service). Exit 0 when every part is valid afterwards, 5 when a part could not be repaired (re-issue the card).")
        @OptionGroup var common: Common
        @Option(help: "A terminal's journal (JSON lines) whose records can vouch for the card's state before a torn write; repeatable.")
        var records: [String] = []

        struct Part: Encodable { var result: String; var detail: String }
        struct Output: Encodable {
            var identity: Part, purse: Part, water: Part
            var balanceYuan: String?, waterYuan: String?, unverifiedWaterYuan: String?
            var valid: Bool
        }

        func run() async throws {
            try await reportingFailures {
                var intents: [TransactionIntent] = []
                for path in records {
                    var isDirectory: ObjCBool = false
                    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
                        throw CLIError(.badInput, "--records \(path): no such file; give a terminal's store (or an earlier JSON-lines journal)")
                    }
                    do { intents += try Card.records(at: path) } catch {
                        throw CLIError(.badInput, "--records \(path) cannot be read as a terminal store or journal (\(error)): give the file itself")
                    }
                }
                let found = intents
                let report = try await Card.withOperations(common, movesMoney: true) { ops, terminal in try ops.repair(terminal: terminal, records: found) }
                let part = { (part: RepairReport.Part) in Part(result: part.result, detail: part.detail) }
                let output = Output(identity: part(report.identity), purse: part(report.purse), water: part(report.water),
                                    balanceYuan: report.purseState?.balance.yuan, waterYuan: report.waterState?.balance.yuan,
                                    unverifiedWaterYuan: report.unverifiedWater?.yuan, valid: report.isValid)
                if common.reader.json {
                    try printJSON(output)
                } else {
                    print("identity  \(report.identity.result): \(report.identity.detail)")
                    print("purse     \(report.purse.result): \(report.purse.detail)")
                    print("water     \(report.water.result): \(report.water.detail)")
                }
                guard report.isValid else {
                    throw CLIError(.refused, "part of the card could not be repaired (see above): re-issue the card from the settlement service's records")
                }
            }
        }
    }
}
