import CampusCard
import CardEmulator
import CardReader
import Foundation
import MifareClassic
import SmartCard
import Testing
import TestSupport

// A seeded random tear soak (issue 8, item 6): a few cards go round a campus of terminals — three POS, a loading and
// settlement station, two water controllers and the card office — and 40 % of their operations are torn at a random
// APDU with a random effect. The library decides every interrupted operation (done / not done / undetermined); the soak
// decides it too, independently, from the emulated card's memory right after the tear (did the commit write land?),
// and keeps its own account of the money. At the end every terminal sees every card once more, so that open intents
// get decided, and the two accounts are compared.
//
// Ground truth, without the library's decision code: each terminal's card channel records the APDUs sent, and its
// journal marks the APDU at which an intent was recorded. The commit of that intent is the first WRITE of the commit
// record's block (8 purse, 12 water) sent after the mark (tearing rule 4: nothing writes the record between the intent
// and the commit). The operation moved money exactly when the card's memory holds those bytes once the operation
// ended (tearing rule 1: the record is the commit point; a torn write leaves the block old or garbled).

// MARK: - Deterministic randomness

/// SplitMix64 (Steele, Lea, Flood 2014): the same seed gives the same run on every machine.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in `range` (modulo bias below 2^-50 for the ranges used here).
    mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
    mutating func chance(_ probability: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < probability }
    mutating func pick<T>(_ items: [T]) -> T { items[int(0...items.count - 1)] }
}

// MARK: - Instruments: what the terminal sent, when it recorded an intent

/// The APDUs one operation sent (a torn one included: it was sent) and the intents it recorded, with the number of
/// APDUs sent before each.
final class APDUTrace: @unchecked Sendable {
    var commands: [[UInt8]] = []
    var intents: [(mark: Int, intent: TransactionIntent)] = []
    /// Intents decided during the operation (this one's or earlier ones').
    var decided: [(terminalSequence: UInt32, outcome: TransactionOutcome)] = []
}

/// A card channel that records every command before passing it to the emulated reader.
struct TracingChannel: CardChannel, Sendable {
    let inner: EmulatedChannel
    let trace: APDUTrace

    func transmit(_ command: [UInt8]) throws -> [UInt8] {
        trace.commands.append(command)
        return try inner.transmit(command)
    }

    func reselect() throws { try inner.reselect() }
}

/// The terminal's journal (in memory), which also tells the soak when an intent was recorded and decided. It keeps
/// its own index of open intents per card (`InMemoryTerminalJournal.openIntents` scans every intent, which makes a
/// long soak quadratic); the outcomes live in the wrapped journal.
final class SoakJournal: TerminalJournal, @unchecked Sendable {
    let inner = InMemoryTerminalJournal()
    var trace: APDUTrace?
    private var open: [String: [UInt32: TransactionIntent]] = [:]
    private var cardOf: [UInt32: String] = [:]

    func nextSequence() throws -> UInt32 { try inner.nextSequence() }
    func record(_ intent: TransactionIntent) throws {
        try inner.record(intent)
        open[intent.cardUID, default: [:]][intent.terminalSequence] = intent
        cardOf[intent.terminalSequence] = intent.cardUID
        trace?.intents.append((trace?.commands.count ?? 0, intent))
    }
    func complete(terminalSequence: UInt32, outcome: TransactionOutcome) throws {
        try inner.complete(terminalSequence: terminalSequence, outcome: outcome)
        if let card = cardOf[terminalSequence] { open[card]?[terminalSequence] = nil }
        trace?.decided.append((terminalSequence, outcome))
    }
    func openIntents(cardUID: String) throws -> [TransactionIntent] {
        (open[cardUID] ?? [:]).values.sorted { $0.terminalSequence < $1.terminalSequence }
    }
    func outcome(terminalSequence: UInt32) throws -> TransactionOutcome? { try inner.outcome(terminalSequence: terminalSequence) }
}

/// The PIN the card office sets on every soak card.
let soakPIN = try! PIN("246810")

/// The one call of `debit` in this file: a PIN-checked debit gives the card's PIN (the holder's limits then allow it).
@discardableResult
func soakDebit(_ operations: CampusCardOperations, _ amount: Fen, terminal: Terminal, pinChecked: Bool) throws -> PurseState {
    try operations.debit(amount, terminal: terminal, pin: pinChecked ? soakPIN : nil)
}

// MARK: - The soak

struct SoakConfiguration: Sendable {
    var operations = 2_000
    var seed: UInt64 = 0x5EED_0008
    var tearRate = 0.40
    var cards = 2
    /// After a tear, the holder taps again at the same terminal this often; otherwise the card goes on at random
    /// (usually elsewhere first: how outcomes become undetermined).
    var retryAtSameTerminal = 0.35
    /// Print each undetermined intent with the operations that followed it on its card.
    var explainUndetermined = 4
    /// The log ring the soak's cards are issued with (layout v2 by default; `SOAK_LAYOUT=1` for the six-entry ring).
    var ring = LogRing.current

    /// `SOAK_OPERATIONS`, `SOAK_SEED` (decimal or 0x hex), `SOAK_CARDS`, `SOAK_LAYOUT` (1 or 2) override the defaults.
    static func fromEnvironment(_ base: SoakConfiguration = SoakConfiguration()) -> SoakConfiguration {
        var configuration = base
        let environment = ProcessInfo.processInfo.environment
        if let text = environment["SOAK_OPERATIONS"], let value = Int(text), value > 0 { configuration.operations = value }
        if let text = environment["SOAK_SEED"] {
            let value = text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
            if let value { configuration.seed = value }
        }
        if let text = environment["SOAK_CARDS"], let value = Int(text), value > 0 { configuration.cards = value }
        if let text = environment["SOAK_LAYOUT"], let ring = LogRing.all.first(where: { String($0.layout) == text }) { configuration.ring = ring }
        return configuration
    }
}

enum SoakRole: String { case pos = "POS", station, water, office }

enum SoakOperation: Equatable {
    case debit(Fen, pinChecked: Bool)
    case load(Fen)
    case waterDebit(Fen)
    case waterSettle
    case lock, unlock
    /// Reads only (repairs, decides the terminal's open intents).
    case purseTap, waterTap

    var category: Category {
        switch self {
        case .debit, .load: .purse
        case .waterDebit, .waterSettle: .water
        case .lock, .unlock: .status
        case .purseTap, .waterTap: .tap
        }
    }
    enum Category: String, CaseIterable { case purse, water, status, tap }

    var name: String {
        switch self {
        case .debit(let amount, let pin): "debit \(amount.yuan)\(pin ? " pin" : "")"
        case .load(let amount): "load \(amount.yuan)"
        case .waterDebit(let amount): "water-debit \(amount.yuan)"
        case .waterSettle: "water-settle"
        case .lock: "lock"
        case .unlock: "unlock"
        case .purseTap: "purse-tap"
        case .waterTap: "water-tap"
        }
    }

    /// Groups operations whose APDU counts are alike (the tear index is drawn from 1...that count).
    var costKey: String {
        switch self {
        case .debit: "debit"
        case .load: "load"
        case .waterDebit: "water-debit"
        case .waterSettle: "water-settle"
        case .lock: "lock"
        case .unlock: "unlock"
        case .purseTap: "purse-tap"
        case .waterTap: "water-tap"
        }
    }
}

final class SoakTerminal {
    let name: String
    let role: SoakRole
    let journal = SoakJournal()
    let terminal: Terminal
    let reader: EmulatedReader

    init(name: String, id: UInt16, role: SoakRole, kind: ReaderKind) {
        self.name = name
        self.role = role
        terminal = Terminal(id: TerminalID(id), journal: journal)
        reader = EmulatedReader(kind: kind)
    }
}

final class SoakCard {
    let index: Int
    let uid: [UInt8]
    let card: EmulatedCard
    /// The soak's own account, from ground truth: fen on the purse and in the water wallet.
    var purse = 0, water = 0
    /// Water debits that landed since the last settlement (what the next settlement must charge).
    var consumedSinceSettlement = 0
    /// Water resets (a torn water record taken to a station first): the value the soak knew was replaced by a
    /// refill; the money the settlement service reconciles from the controllers' uploads.
    var resetAdjustment = 0, resets = 0
    var history: [String] = []
    var strandedAt: Int?
    /// Which operation last set the purse record's counter to each value (from the card's memory).
    var counterOwner: [UInt16: (operation: Int, text: String)] = [:]
    /// The purse record's counter (bytes 0-1 of block 8, big-endian), read from memory without the library.
    var rawCounter: UInt16 { UInt16(card.memory[8 * 16]) << 8 | UInt16(card.memory[8 * 16 + 1]) }

    var uidHex: String { uid.map { String(format: "%02X", $0) }.joined() }

    init(index: Int, uid: [UInt8]) throws {
        self.index = index
        self.uid = uid
        card = try EmulatedCard(image: SampleCards.blank1K(uid: uid))
    }
}

/// What happened to one intent: the soak's truth and the card memory's verdict.
struct SoakTruth {
    var intent: TransactionIntent
    var landed: Bool
    var operationIndex: Int
    var card: Int
    var terminal: String
    var tear: String
    /// Why the library could not decide it (set when it decided `undetermined`).
    var cause: (short: String, detail: String)?
}

struct SoakReport: CustomStringConvertible {
    var seed: UInt64 = 0
    var ring = LogRing.current
    var operations = 0, succeeded = 0
    var attempted: [SoakOperation.Category: Int] = [:]
    var tearsArmed = 0, tearsFired = 0
    var torn: [SoakOperation.Category: Int] = [:]
    /// Torn money operations that had recorded their intent before the tear (the library had a decision to make).
    var tornAfterIntent: [SoakOperation.Category: Int] = [:]
    var refusals: [String: Int] = [:]
    /// Operations refused without a tear for a reason that is not a legitimate refusal.
    var anomalies: [String: Int] = [:]
    var outcomes: [SoakOperation.Category: [String: Int]] = [:]
    var undeterminedFen: [SoakOperation.Category: Int] = [:]
    var wrongDecisions: [String] = []
    var conservationViolations: [String] = []
    var stranded: [String] = []
    var waterResets = 0, waterResetAdjustmentFen = 0
    var seconds = 0.0
    var undeterminedExplained: [String] = []
    var undeterminedCauses: [String: Int] = [:]
    var undeterminedKinds: [String: Int] = [:]
    /// Undetermined purse intents by the purse operations (counter moves) the card made between the tear and the tap
    /// that decided it: more than the log ring's slots means the ring rotated past the intent.
    var undeterminedPurseMoves: [Int: Int] = [:]

    func undeterminedRate(_ category: SoakOperation.Category) -> Double {
        let tornCount = torn[category] ?? 0
        return tornCount == 0 ? 0 : 100 * Double(outcomes[category]?["undetermined"] ?? 0) / Double(tornCount)
    }

    var description: String {
        func line(_ dictionary: [String: Int]) -> String {
            dictionary.isEmpty ? "none" : dictionary.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        }
        func counts(_ dictionary: [SoakOperation.Category: Int]) -> String {
            SoakOperation.Category.allCases.map { "\($0.rawValue) \(dictionary[$0] ?? 0)" }.joined(separator: ", ")
        }
        var lines = [
            "tear soak, seed 0x\(String(seed, radix: 16)), cards of \(ring): \(operations) operations (\(counts(attempted))), \(succeeded) succeeded, \(String(format: "%.1f", seconds)) s",
            "tears: \(tearsArmed) armed, \(tearsFired) fired; torn operations: \(counts(torn)); torn after their intent: \(counts(tornAfterIntent))",
            "refusals (legitimate): \(line(refusals)); anomalies (refused without a tear): \(line(anomalies))",
        ]
        for category in [SoakOperation.Category.purse, .water] {
            let outcome = outcomes[category] ?? [:]
            lines.append("\(category.rawValue) intents: \(line(outcome)); undetermined \(outcome["undetermined"] ?? 0) of \(torn[category] ?? 0) torn = "
                         + String(format: "%.3f %%", undeterminedRate(category)) + ", \(Fen(undeterminedFen[category] ?? 0).yuan) yuan at stake")
        }
        lines.append("water resets: \(waterResets) (value replaced, reconciled by the settlement service: \(Fen(waterResetAdjustmentFen).yuan) yuan net)")
        lines.append("wrong decisions: \(wrongDecisions.count); conservation violations: \(conservationViolations.count); stranded cards: \(stranded.count)")
        for item in (wrongDecisions + conservationViolations + stranded).prefix(10) { lines.append("  ! \(item)") }
        lines.append("undetermined by kind: \(line(undeterminedKinds))")
        lines.append("purse undetermined by purse operations between tear and decision: "
                     + (undeterminedPurseMoves.isEmpty ? "none" : undeterminedPurseMoves.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")))
        for (cause, count) in undeterminedCauses.sorted(by: { $0.key < $1.key }) { lines.append("  undetermined: \(count) × \(cause)") }
        lines += undeterminedExplained
        return lines.joined(separator: "\n")
    }
}

final class TearSoak {
    let configuration: SoakConfiguration
    var rng: SplitMix64
    let keystore: FileKeystore
    let keystorePath: String
    var terminals: [SoakTerminal] = []
    var cards: [SoakCard] = []
    var truths: [String: SoakTruth] = [:]
    var report = SoakReport()
    /// APDUs an untorn operation of each kind sent last (the tear index is drawn up to it).
    var cost: [String: Int] = ["debit": 12, "load": 19, "water-debit": 14, "water-settle": 19, "lock": 20, "unlock": 20,
                               "purse-tap": 6, "water-tap": 6]
    var operationIndex = 0
    let start = Date(timeIntervalSince1970: 1_795_300_000)
    var now: Date { start.addingTimeInterval(Double(operationIndex) * 40 * 60) }

    var pos: [SoakTerminal] { terminals.filter { $0.role == .pos } }
    var waterControllers: [SoakTerminal] { terminals.filter { $0.role == .water } }
    var station: SoakTerminal { terminals.first { $0.role == .station }! }
    var office: SoakTerminal { terminals.first { $0.role == .office }! }

    init(_ configuration: SoakConfiguration) throws {
        self.configuration = configuration
        rng = SplitMix64(seed: configuration.seed)
        report.seed = configuration.seed
        report.ring = configuration.ring
        // Fixed masters drawn from the seed (not FileKeystore.create's random ones), so a run repeats byte for byte.
        var keyRNG = SplitMix64(seed: configuration.seed ^ 0x6B65_7973)
        func master() -> String { (0..<2).map { _ in String(format: "%016llx", keyRNG.next()) }.joined() }
        let json = """
        {"format":"onecard-keystore-v1","currentVersion":1,"versions":[{"version":1,"created":"2026-11-22T16:51:00Z",
        "masters":{"terminal":"\(master())","loader":"\(master())","mac":"\(master())"}}]}
        """
        keystorePath = NSTemporaryDirectory() + "soak-keystore-\(UUID().uuidString).json"
        _ = FileManager.default.createFile(atPath: keystorePath, contents: Data(json.utf8), attributes: [.posixPermissions: 0o600])
        keystore = try FileKeystore(path: keystorePath)
        terminals = [
            SoakTerminal(name: "POS-101", id: 101, role: .pos, kind: .acr122u),
            SoakTerminal(name: "POS-102", id: 102, role: .pos, kind: .acr122u),
            SoakTerminal(name: "POS-103", id: 103, role: .pos, kind: .acr1252u),
            SoakTerminal(name: "STATION-201", id: 201, role: .station, kind: .acr122u),
            SoakTerminal(name: "WATER-301", id: 301, role: .water, kind: .acr122u),
            SoakTerminal(name: "WATER-302", id: 302, role: .water, kind: .acr1252u),
            SoakTerminal(name: "OFFICE-900", id: 900, role: .office, kind: .acr122u),
        ]
        for index in 0..<configuration.cards {
            let card = try SoakCard(index: index, uid: [0x5A, 0x0C, UInt8(index >> 8), UInt8(index & 0xFF)])
            cards.append(card)
            try issue(card)
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: keystorePath) }

    /// A fresh card session at `terminal` (the card was just presented to its reader).
    func session(at terminal: SoakTerminal, trace: APDUTrace) -> CampusCardOperations {
        let channel = TracingChannel(inner: EmulatedChannel(reader: terminal.reader), trace: trace)
        let session = MifareSession(channel: channel, profile: .profile(for: terminal.reader.kind))
        return CampusCardOperations(session: session, keystore: keystore, now: now, reselect: { try channel.reselect() })
    }

    /// Issue (at the card office) and a first load and water settlement, untorn.
    func issue(_ card: SoakCard) throws {
        office.reader.insert(card.card)
        let trace = APDUTrace()
        try session(at: office, trace: trace).issue(Identity(serial: UInt32(card.index + 1), account: UInt32(1_000 + card.index), type: .student,
                                                            keyVersion: 1, issued: CardDay(now), expires: CardDay(rawValue: CardDay(now).rawValue + 4_000)),
                                                   ring: configuration.ring)
        try session(at: office, trace: trace).setPIN(soakPIN)
        office.reader.remove()
        for operation in [SoakOperation.load(Fen(20_000)), .waterSettle] {
            _ = perform(operation, card: card, at: station, tear: nil)
        }
    }

    // MARK: One operation

    enum OperationResult {
        var succeeded: Bool { if case .succeeded = self { true } else { false } }
        case succeeded
        case torn(Error?)
        case refused(String)
        case anomaly(String)
    }

    /// Presents the card at `terminal`, runs `operation` (torn as planned), takes the card away, then establishes the
    /// truth of every intent the operation recorded from the card's memory and updates the soak's account.
    @discardableResult
    func perform(_ operation: SoakOperation, card: SoakCard, at terminal: SoakTerminal, tear: TearPlan?) -> OperationResult {
        operationIndex += 1
        report.operations += 1
        report.attempted[operation.category, default: 0] += 1
        terminal.reader.insert(card.card)
        let counterBefore = card.rawCounter
        let trace = APDUTrace()
        terminal.journal.trace = trace
        let ops = session(at: terminal, trace: trace)
        if tear != nil { report.tearsArmed += 1 }
        terminal.reader.arm(tear)
        var returnedBalance: (purse: Int?, water: Int?) = (nil, nil)
        var thrown: Error?
        do {
            returnedBalance = try execute(operation, ops, at: terminal)
        } catch {
            thrown = error
        }
        let fired = tear != nil && terminal.reader.armedPlan == nil
        terminal.reader.arm(nil)
        terminal.reader.remove()
        terminal.journal.trace = nil
        if fired { report.tearsFired += 1 }
        if tear == nil && thrown == nil { cost[operation.costKey] = trace.commands.count }

        // Truth of each intent recorded, from the card's memory now.
        var tearText = "-"
        if let tear { tearText = fired ? "tear@\(tear.atAPDU)/\(tear.effect.rawValue)" : "tear@\(tear.atAPDU) (not reached)" }
        for (mark, intent) in trace.intents {
            let recordBlock = intent.isPurse ? CampusCardOperations.record : WaterRecord.block
            let commit = trace.commands[mark...].first { $0.count == 21 && $0[0] == 0xFF && $0[1] == 0xD6 && Int($0[3]) == recordBlock }
            let landed = commit.map { Array($0[5..<21]) == Array(card.card.memory[recordBlock * 16..<recordBlock * 16 + 16]) } ?? false
            truths[key(intent)] = SoakTruth(intent: intent, landed: landed, operationIndex: operationIndex, card: card.index, terminal: terminal.name,
                                            tear: tearText)
            if landed { apply(intent, to: card) }
        }
        let category = operation.category
        if fired {
            report.torn[category, default: 0] += 1
            if !trace.intents.isEmpty { report.tornAfterIntent[category, default: 0] += 1 }
        }

        // A balance the library returned is the soak's own.
        if let purse = returnedBalance.purse, purse != card.purse {
            report.conservationViolations.append("op #\(operationIndex) card \(card.index) \(operation.name) at \(terminal.name): the library says purse \(Fen(purse).yuan), the soak \(Fen(card.purse).yuan) (seed 0x\(String(configuration.seed, radix: 16)))")
        }
        if let water = returnedBalance.water, water != card.water {
            report.conservationViolations.append("op #\(operationIndex) card \(card.index) \(operation.name) at \(terminal.name): the library says water \(Fen(water).yuan), the soak \(Fen(card.water).yuan) (seed 0x\(String(configuration.seed, radix: 16)))")
        }
        // Raw invariant, without the library: the committed purse balance is held by the primary or the backup.
        let raw = [9, 10].map { try? ValueBlock(block: Array(card.card.memory[$0 * 16..<$0 * 16 + 16])).value }
        if !raw.contains(Int32(card.purse)) {
            report.conservationViolations.append("op #\(operationIndex) card \(card.index) \(operation.name) at \(terminal.name) \(tearText): neither value block holds the purse balance \(Fen(card.purse).yuan) (primary \(raw[0].map(String.init) ?? "garbled"), backup \(raw[1].map(String.init) ?? "garbled"))")
        }

        let result: OperationResult
        switch thrown {
        case nil: result = fired ? .torn(nil) : .succeeded
        case .some(let error) where fired: result = .torn(error)
        case .some(let error as CardOperationError):
            switch error.code {
            case .insufficientFunds, .overLimit, .cardLocked, .waterInterrupted, .pinRequired, .pinNotSet: result = .refused(error.code.rawValue)
            default: result = .anomaly(error.code.rawValue)
            }
        case .some(let error): result = .anomaly(String(describing: type(of: error)))
        }
        var text = "#\(operationIndex) \(terminal.name) \(operation.name) \(tearText)"
        switch result {
        case .succeeded: report.succeeded += 1; text += " ok"
        case .torn(let error): text += error == nil ? " done (torn after commit)" : " torn"
        case .refused(let code): report.refusals[code, default: 0] += 1; text += " refused \(code)"
        case .anomaly(let code): report.anomalies[code, default: 0] += 1; text += " REFUSED \(code): \(thrown.map { "\($0)" } ?? "")"
        }
        for (_, intent) in trace.intents {
            text += " [intent \(intent.terminalID)/\(intent.terminalSequence) \(truths[key(intent)]!.landed ? "landed" : "not landed")]"
        }
        for (sequence, outcome) in trace.decided where !trace.intents.contains(where: { $0.intent.terminalSequence == sequence }) {
            let label = switch outcome { case .done: "done"; case .notDone: "notDone"; case .undetermined: "undetermined" }
            text += " {decides \(terminal.terminal.id)/\(sequence) \(label)}"
            if outcome == .undetermined, let truth = truths["\(terminal.terminal.id)/\(sequence)"] {
                let cause = cause(of: truth, card: card)
                truths["\(terminal.terminal.id)/\(sequence)"]?.cause = cause
                report.undeterminedCauses[cause.short, default: 0] += 1
                report.undeterminedKinds[truth.intent.kind.rawValue, default: 0] += 1
                if truth.intent.isPurse { report.undeterminedPurseMoves[Int(card.rawCounter &- truth.intent.counterBefore), default: 0] += 1 }
            }
        }
        text += " | purse \(Fen(card.purse).yuan) water \(Fen(card.water).yuan)"
        card.history.append(text)
        if card.rawCounter != counterBefore { card.counterOwner[card.rawCounter] = (operationIndex, text) }
        return result
    }

    /// Why an intent could not be decided, from the card's memory (documented layout, read without the library).
    func cause(of truth: SoakTruth, card: SoakCard) -> (short: String, detail: String) {
        let memory = card.card.memory
        let commit = truth.landed ? "commit landed" : "commit did not land"
        guard truth.intent.isPurse else {
            let reference = memory[12 * 16 + 6..<12 * 16 + 10].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            let short = "water, \(commit), " + (reference != truth.intent.referenceBefore ? "settled since" : "used elsewhere since")
            return (short, short)
        }
        let moves = card.rawCounter &- truth.intent.counterBefore
        // The ring's size from the purse primary's address byte (docs/card-layout.md), read without the library.
        let slots = LogRing(valueAddress: memory[9 * 16 + 12])?.slots ?? 6
        if moves > slots { return ("purse, \(commit), more than \(slots) purse operations before its terminal saw the card again (the log ring rotated)", "") }
        let owner = card.counterOwner[truth.intent.counterBefore &+ 1]
        if truth.landed && owner?.operation == truth.operationIndex {
            return ("purse, commit landed, \(moves) purse operations since, its log entry never written (the back-fill did not run)", "")
        }
        return ("purse, \(commit), \(moves) purse operations since, the log entry of the operation that took its counter missing",
                "counter \(truth.intent.counterBefore &+ 1) taken by \(owner?.text ?? "?")")
    }

    /// Runs one operation in a card session; returns the balance it reports, if any.
    func execute(_ operation: SoakOperation, _ ops: CampusCardOperations, at terminal: SoakTerminal) throws -> (purse: Int?, water: Int?) {
        switch operation {
        case .debit(let amount, let pin): (try soakDebit(ops, amount, terminal: terminal.terminal, pinChecked: pin).balance.rawValue, nil)
        case .load(let amount): (try ops.load(amount, terminal: terminal.terminal).balance.rawValue, nil)
        case .waterDebit(let amount): (nil, try ops.waterDebit(amount, terminal: terminal.terminal).balance.rawValue)
        case .waterSettle: (nil, try ops.waterSettle(terminal: terminal.terminal).state.balance.rawValue)
        case .lock: (try ops.setStatus(.lost).balance.rawValue, nil)
        case .unlock: (try ops.setStatus(.normal).balance.rawValue, nil)
        case .purseTap: (try ops.tap(terminal: terminal.terminal).balance.rawValue, nil)
        case .waterTap: (nil, try ops.waterTap(terminal: terminal.terminal).balance.rawValue)
        }
    }

    /// The 1-based index of the first APDU matching `predicate` that `operation` sends at `terminal` now: found by a
    /// dry run on a copy of the card at a copy of the terminal (a fresh journal: only for terminals with no open
    /// intent for the card). For the reproductions below, which tear one exact APDU.
    func apduIndex(of operation: SoakOperation, card: SoakCard, at terminal: SoakTerminal, where predicate: ([UInt8]) -> Bool) throws -> Int {
        let scratch = SoakTerminal(name: terminal.name, id: terminal.terminal.id.rawValue, role: terminal.role, kind: terminal.reader.kind)
        scratch.reader.insert(try EmulatedCard(image: card.card.memory))
        let trace = APDUTrace()
        operationIndex += 1
        defer { operationIndex -= 1 }
        _ = try? execute(operation, session(at: scratch, trace: trace), at: scratch)
        guard let index = trace.commands.firstIndex(where: predicate) else { throw TestSetupError("\(operation.name) sends no such APDU") }
        return index + 1
    }

    /// WRITE (UPDATE BINARY) of `block`.
    static func isWrite(_ block: Int) -> ([UInt8]) -> Bool { { $0.count == 21 && $0[1] == 0xD6 && Int($0[3]) == block } }

    func key(_ intent: TransactionIntent) -> String { "\(intent.terminalID)/\(intent.terminalSequence)" }

    /// Moves the soak's money as an intent that landed did.
    func apply(_ intent: TransactionIntent, to card: SoakCard) {
        switch intent.kind {
        case .purseDebit: card.purse -= intent.amount.rawValue
        case .purseLoad, .purseSubsidy: card.purse += intent.amount.rawValue
        case .waterDebit:
            card.water -= intent.amount.rawValue
            card.consumedSinceSettlement += intent.amount.rawValue
        case .waterSettle:
            if intent.consumption?.rawValue != card.consumedSinceSettlement {
                report.conservationViolations.append("op #\(operationIndex) card \(card.index): a settlement charged \((intent.consumption ?? Fen(-1)).yuan) yuan of water, the controllers' landed debits since the last settlement were \(Fen(card.consumedSinceSettlement).yuan)")
            }
            card.water += intent.amount.rawValue
            card.consumedSinceSettlement = 0
        case .waterRefund:
            card.water -= intent.amount.rawValue
            card.consumedSinceSettlement = 0
        case .waterReset:
            card.resetAdjustment += intent.amount.rawValue - card.water
            card.resets += 1
            card.water = intent.amount.rawValue
            card.consumedSinceSettlement = 0
        }
    }

    // MARK: The run

    /// A holder's next move with `card`: mostly canteen and showers, sometimes the station, rarely the card office.
    func nextOperation(for card: SoakCard) -> (SoakOperation, SoakTerminal) {
        let roll = rng.int(0...999)
        let loadBias = card.purse < 5_000 ? 250 : 0
        let refillBias = card.water < 100 ? 200 : 0
        if roll < 120 + loadBias {
            return (.load(Fen(rng.int(50...300) * 100)), station)
        }
        if roll < 200 + loadBias + refillBias { return (.waterSettle, station) }
        if roll < 215 + loadBias + refillBias { return (.lock, office) }
        if roll < 520 + loadBias + refillBias { return (.waterDebit(Fen(rng.int(1...8) * 10)), rng.pick(waterControllers)) }
        let large = rng.chance(0.15)
        let amount = large ? rng.int(2_500...12_000) : rng.int(150...2_500)
        return (.debit(Fen(amount), pinChecked: large || rng.chance(0.3)), rng.pick(pos))
    }

    func tearPlan(for operation: SoakOperation) -> TearPlan? {
        guard rng.chance(configuration.tearRate) else { return nil }
        let index = rng.int(1...max(1, cost[operation.costKey] ?? 12))
        return TearPlan(atAPDU: index, effect: rng.pick(TearEffect.allCases))
    }

    func run() -> SoakReport {
        let started = Date()
        var retry: (SoakOperation, SoakTerminal, SoakCard)?
        while report.operations < configuration.operations {
            let live = cards.filter { $0.strandedAt == nil }
            guard !live.isEmpty else { break }
            let (operation, terminal, card): (SoakOperation, SoakTerminal, SoakCard)
            if let again = retry {
                (operation, terminal, card) = again
            } else {
                card = rng.pick(live)
                (operation, terminal) = nextOperation(for: card)
            }
            retry = nil
            let result = perform(operation, card: card, at: terminal, tear: tearPlan(for: operation))
            if operation == .lock {
                // The card office unlocks in the same visit, repeating a torn unlock (up to 5 times; the card may leave
                // locked, then POS refuse it until the office sees it again).
                for _ in 0..<5 {
                    if case .succeeded = perform(.unlock, card: card, at: office, tear: tearPlan(for: .unlock)) { break }
                }
            }
            switch result {
            case .torn(_?):
                // Torn with an error (a done operation torn after its commit returned: nobody repeats it).
                if rng.chance(configuration.retryAtSameTerminal) { retry = (operation, terminal, card) }
            case .anomaly:
                probeStranded(card)
            case .torn(nil), .succeeded, .refused:
                break
            }
        }
        finish()
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    /// A card refused without a tear: present it at every terminal (untorn). Refused by all of them for its purse, or by
    /// every water terminal (controllers and the station's settlement, which resets a torn wallet), it is stranded.
    func probeStranded(_ card: SoakCard) {
        func accepted(_ operation: SoakOperation, _ terminal: SoakTerminal) -> Bool {
            if case .succeeded = perform(operation, card: card, at: terminal, tear: nil) { return true }
            return false
        }
        let purseOK = (pos + [station, office]).map { accepted(.purseTap, $0) }.contains(true)
        let waterOK = (waterControllers.map { accepted(.waterTap, $0) } + [accepted(.waterSettle, station)]).contains(true)
        if !purseOK || !waterOK {
            card.strandedAt = operationIndex
            // The holder gets a new card (the stranded one is counted and left out from here on).
            if let replacement = try? SoakCard(index: cards.count, uid: [0x5A, 0x0C, UInt8(cards.count >> 8), UInt8(cards.count & 0xFF)]),
               (try? issue(replacement)) != nil {
                cards.append(replacement)
            }
            report.stranded.append("card \(card.index) (\(card.uidHex)) refused by every terminal for its \(purseOK ? "water wallet" : "purse") after op #\(operationIndex), seed 0x\(String(configuration.seed, radix: 16)); its last operations:\n      "
                                   + card.history.suffix(14).joined(separator: "\n      "))
        }
    }

    /// Every terminal sees every card once more (twice: a water wallet torn at one controller is restored there first),
    /// then the two accounts and every decision are compared.
    func finish() {
        for _ in 0..<2 {
            for card in cards where card.strandedAt == nil {
                for terminal in terminals {
                    switch terminal.role {
                    case .pos, .office: perform(.purseTap, card: card, at: terminal, tear: nil)
                    case .water: perform(.waterTap, card: card, at: terminal, tear: nil)
                    case .station:
                        perform(.purseTap, card: card, at: terminal, tear: nil)
                        perform(.waterTap, card: card, at: terminal, tear: nil)
                    }
                }
            }
        }
        // The card's own word, read at a neutral reader, against the soak's account; and the raw value blocks.
        for card in cards where card.strandedAt == nil {
            let reader = SoakTerminal(name: "AUDIT", id: 999, role: .office, kind: .acr122u)
            reader.reader.insert(card.card)
            let ops = session(at: reader, trace: APDUTrace())
            do {
                let purse = try ops.readPurse().balance.rawValue
                let water = try ops.readWater().balance.rawValue
                if purse != card.purse || water != card.water {
                    report.conservationViolations.append("card \(card.index) at the end: the card says purse \(Fen(purse).yuan) water \(Fen(water).yuan), the soak's account purse \(Fen(card.purse).yuan) water \(Fen(card.water).yuan)")
                }
            } catch {
                report.conservationViolations.append("card \(card.index) at the end: unreadable (\(error))")
            }
            for (blocks, expected, name) in [([9, 10], card.purse, "purse"), ([13, 14], card.water, "water")] {
                let raw = blocks.map { try? ValueBlock(block: Array(card.card.memory[$0 * 16..<$0 * 16 + 16])).value }
                if raw != [Int32(expected), Int32(expected)] {
                    report.conservationViolations.append("card \(card.index) at the end: \(name) value blocks \(raw) after every terminal's tap, the soak's account \(expected)")
                }
            }
            report.waterResets += card.resets
            report.waterResetAdjustmentFen += card.resetAdjustment
        }
        // Every decision against the truth.
        var explained = 0
        for terminal in terminals {
            for (intent, outcome) in terminal.journal.inner.entries {
                guard let truth = truths[key(intent)] else { continue }
                let category: SoakOperation.Category = intent.isPurse ? .purse : .water
                let label: String
                switch outcome {
                case .done?: label = "done"
                case .notDone?: label = "notDone"
                case .undetermined?: label = "undetermined"
                case nil: label = "open"
                }
                report.outcomes[category, default: [:]][label, default: 0] += 1
                let wrong = (label == "done" && !truth.landed) || (label == "notDone" && truth.landed)
                let where_ = "intent \(key(intent)) \(intent.kind.rawValue) \(intent.amount.yuan) on card \(truth.card) at op #\(truth.operationIndex) (\(truth.tear)), seed 0x\(String(configuration.seed, radix: 16))"
                if wrong {
                    report.wrongDecisions.append("\(where_): decided \(label), but the commit \(truth.landed ? "landed" : "did not land"); the card's operations from there:\n      "
                                                 + context(truth).joined(separator: "\n      "))
                }
                if label == "undetermined" {
                    report.undeterminedFen[category, default: 0] += intent.amount.rawValue
                    // Explain the purse ones the log ring's size does not (those are the library's to improve).
                    if explained < configuration.explainUndetermined, intent.isPurse, let cause = truth.cause, !cause.short.contains("rotated") {
                        explained += 1
                        report.undeterminedExplained.append("undetermined: \(where_): \(cause.short) \(cause.detail)\n      "
                                                            + context(truth).joined(separator: "\n      "))
                    }
                }
                if label == "open" && truth.card < cards.count && cards[truth.card].strandedAt == nil {
                    report.conservationViolations.append("\(where_): still open after every terminal saw the card")
                }
            }
        }
    }

    /// The card's operations from the intent's own up to the one that decided it (the middle elided past 12 lines).
    func context(_ truth: SoakTruth) -> [String] {
        let history = cards[truth.card].history
        guard let first = history.firstIndex(where: { $0.hasPrefix("#\(truth.operationIndex) ") }) else { return [] }
        let key = "{decides \(truth.intent.terminalID)/\(truth.intent.terminalSequence) "
        let last = history[first...].firstIndex { $0.contains(key) } ?? min(history.count - 1, first + 11)
        let lines = Array(history[first...last])
        guard lines.count > 12 else { return lines }
        let purseMoves = lines.filter { $0.contains("landed]") && !$0.contains("not landed]") && ($0.contains(" debit ") || $0.contains(" load ")) }.count
        return Array(lines.prefix(4)) + ["… \(lines.count - 10) operations (\(purseMoves) purse operations landed in all) …"] + Array(lines.suffix(6))
    }
}

// MARK: - Tests

@Suite struct TearSoakTests {
    /// The soak at its default size (or `SOAK_OPERATIONS`, `SOAK_SEED`, `SOAK_CARDS`, `SOAK_LAYOUT`): no decision the
    /// card memory contradicts, the money adds up, no card stranded, and the purse's undetermined rate within 0.2 % of its
    /// torn operations (issue 8, item 6: met by layout v2's 24-entry log ring; cards of layout v1, `SOAK_LAYOUT=1`, keep
    /// the six-entry ring and measure 0.4-0.7 %, recorded as a known issue). The water wallet's rate is printed, not asserted: it keeps no log, so a water debit whose commit went
    /// unanswered cannot be told from another controller's debit once the card was used or settled elsewhere (the
    /// money is settled by consumption either way: docs/card-layout.md, rule 5).
    ///
    /// Known issues (the reproductions below, one test each): cards stranded by a log gap followed by a torn commit
    /// (`strandedByLogGap`, `strandedByGarbledBackup`); undetermined purse intents the log could have decided
    /// (`backfillLostBetweenRepairAndLog`, `entryAfterNextProvesNotDone`); and, with layout v1, intents whose terminal
    /// saw the card again only after the six-entry log ring had rotated past them (`LogRingTests`).
    @Test func seededTearSoak() throws {
        var base = SoakConfiguration()
        base.operations = 8_000
        let soak = try TearSoak(SoakConfiguration.fromEnvironment(base))
        let report = soak.run()
        print(report)
        #expect(report.wrongDecisions.isEmpty, "wrong decisions:\n\(report.wrongDecisions.joined(separator: "\n"))")
        #expect(report.conservationViolations.isEmpty, "conservation:\n\(report.conservationViolations.joined(separator: "\n"))")
        #expect(report.tearsFired > report.operations / 4, "the soak tears about 40 % of its operations")
        #expect(report.stranded.isEmpty, "stranded:\n\(report.stranded.joined(separator: "\n"))")
        print(String(format: "purse undetermined rate: %.3f %% of torn purse operations (goal <= 0.2 %%), cards of ", report.undeterminedRate(.purse))
              + "\(report.ring)")
        if report.ring == .v1 {
            // Layout v1 cards: nearly all that is left are intents whose terminal saw the card again only after the
            // six-entry ring rotated past them (the settlement service decides those). Kept for comparison.
            withKnownIssue("purse undetermined above 0.2 % with the six-entry ring (layout v1)", isIntermittent: true) {
                #expect(report.undeterminedRate(.purse) <= 0.2, "purse undetermined \(report.undeterminedRate(.purse)) % of torn purse operations")
            }
        } else {
            #expect(report.undeterminedRate(.purse) <= 0.2, "purse undetermined \(report.undeterminedRate(.purse)) % of torn purse operations")
        }
    }

    /// The same seed gives the same run.
    @Test func soakIsDeterministic() throws {
        var configuration = SoakConfiguration()
        configuration.operations = 150
        let first = try TearSoak(configuration).run()
        let second = try TearSoak(configuration).run()
        #expect(first.description.split(separator: "\n").dropFirst().joined() == second.description.split(separator: "\n").dropFirst().joined())
        #expect(first.tearsFired == second.tearsFired && first.outcomes == second.outcomes)
    }

    // MARK: Reproductions of what the soak found (each fixed since; they fail without the fix)

    /// One card (200.00 yuan after issue), POS-101 and POS-102 (ACR122U), the station; no random tears.
    static func scene() throws -> (TearSoak, SoakCard) {
        var configuration = SoakConfiguration()
        configuration.cards = 1
        configuration.operations = 0
        let soak = try TearSoak(configuration)
        return (soak, soak.cards[0])
    }

    static func isLogWrite(_ command: [UInt8]) -> Bool { LogRing.all.flatMap(\.blocks).contains { TearSoak.isWrite($0)(command) } }

    /// FOUND BY THE SOAK (seed 0x5eed0008, e.g. ops #11035/#11040, #4862/#4870, #7674/#7677): stranded card. A debit
    /// torn after its backup copy but before its log entry landed (APDUs 10-12) is done and leaves a gap in the log;
    /// the backup does not lag, so no back-fill runs. The next purse operation's commit torn garbled leaves a record
    /// that only a log entry with `balance after` = backup can rebuild, and that entry is the missing one: every
    /// terminal refuses the card as `mac-mismatch` (docs/card-layout.md rule 6 names it; no repair exists).
    @Test func strandedByLogGap() throws {
        let (soak, card) = try Self.scene()
        let (first, second) = (soak.pos[0], soak.pos[1])
        let debit = SoakOperation.debit(Fen(100), pinChecked: true)
        let logWrite = try soak.apduIndex(of: debit, card: card, at: first, where: Self.isLogWrite)
        soak.perform(debit, card: card, at: first, tear: TearPlan(atAPDU: logWrite, effect: .leftOld))
        #expect(card.purse == 19_900, "done: the commit landed")
        let commit = try soak.apduIndex(of: debit, card: card, at: second, where: TearSoak.isWrite(8))
        soak.perform(debit, card: card, at: second, tear: TearPlan(atAPDU: commit, effect: .garbled))
        #expect(card.purse == 19_900, "not done: the commit was garbled")
        // Fixed: the interrupted terminal puts back the record its journal verified before its torn commit; after
        // that every terminal takes the card.
        #expect(soak.perform(.purseTap, card: card, at: second, tear: nil).succeeded, "the interrupted terminal restores the card: \(card.history.last ?? "")")
        for terminal in soak.pos + [soak.station] {
            #expect(soak.perform(.purseTap, card: card, at: terminal, tear: nil).succeeded, "\(terminal.name) refuses the card: \(card.history.last ?? "")")
        }
    }

    /// FOUND BY THE SOAK (seed 0x5eed0008, ops #1280/#1287, #8604/#8605, #14121/#14130): stranded card. A debit torn
    /// at its backup copy with the block left garbled is done, and its log entry was never written. The next tap
    /// repairs the backup but skips the back-fill, which runs only when the lagging backup decodes (`before` is taken
    /// from it; the entry for counter - 1 would give it). Its commit then torn garbled, the card is refused everywhere.
    @Test func strandedByGarbledBackup() throws {
        let (soak, card) = try Self.scene()
        let (first, second) = (soak.pos[0], soak.pos[1])
        let debit = SoakOperation.debit(Fen(100), pinChecked: true)
        let commitFirst = try soak.apduIndex(of: debit, card: card, at: first, where: TearSoak.isWrite(8))
        soak.perform(debit, card: card, at: first, tear: TearPlan(atAPDU: commitFirst + 1, effect: .garbled))
        #expect(card.purse == 19_900, "done: the commit landed; the backup copy after it was garbled")
        let commitSecond = try soak.apduIndex(of: debit, card: card, at: second, where: TearSoak.isWrite(8))
        soak.perform(debit, card: card, at: second, tear: TearPlan(atAPDU: commitSecond, effect: .garbled))
        // Fixed: the back-fill takes the balance before from the entry for counter - 1.
        for terminal in soak.pos + [soak.station] {
            #expect(soak.perform(.purseTap, card: card, at: terminal, tear: nil).succeeded, "\(terminal.name) refuses the card: \(card.history.last ?? "")")
        }
    }

    /// FOUND BY THE SOAK (seed 0x5eed0008, ops #2898/#2900): undetermined although the commit landed. POS-101's
    /// commit is acknowledged-but-lost; POS-102 repairs the backup, then the card leaves before the back-fill wrote
    /// the log entry (the repair copy comes first). At the next tap the backup no longer lags, so no tap ever
    /// back-fills, and POS-101 cannot decide from the log.
    @Test func backfillLostBetweenRepairAndLog() throws {
        let (soak, card) = try Self.scene()
        let (first, second) = (soak.pos[0], soak.pos[1])
        let debit = SoakOperation.debit(Fen(100), pinChecked: true)
        let commit = try soak.apduIndex(of: debit, card: card, at: first, where: TearSoak.isWrite(8))
        soak.perform(debit, card: card, at: first, tear: TearPlan(atAPDU: commit, effect: .executed))
        #expect(card.purse == 19_900, "the commit landed, its answer lost")
        let logRead = try soak.apduIndex(of: debit, card: card, at: second, where: { $0.count == 5 && $0[1] == 0xB0 && $0[3] == 16 })
        soak.perform(debit, card: card, at: second, tear: TearPlan(atAPDU: logRead, effect: .notExecuted))
        soak.perform(debit, card: card, at: second, tear: nil)
        soak.perform(.purseTap, card: card, at: first, tear: nil)
        let outcome = try #require(first.journal.inner.entries.first { $0.intent.kind == .purseDebit }).outcome
        // Fixed: the back-fill runs before the backup is repaired.
        #expect(outcome == .done(balanceAfter: 19_900, counterAfter: 2))
        #expect(outcome != .notDone, "never a wrong decision")
    }

    /// FOUND BY THE SOAK (seed 0x5eed0008, op #4296): undetermined although the card proves not done. POS-101's commit
    /// is torn (block left old); the station's load takes the counter and its log write is torn (a gap); POS-102's
    /// debit logs the next counter. From that entry the balance after the load's counter is 250.00; had POS-101's debit
    /// taken it, it would be 199.00. `outcome(of:)` decides not done only when that balance equals the intent's balance
    /// before, and otherwise says undetermined, which is needed only when it equals the intent's balance after.
    @Test func entryAfterNextProvesNotDone() throws {
        let (soak, card) = try Self.scene()
        let (first, second) = (soak.pos[0], soak.pos[1])
        let debit = SoakOperation.debit(Fen(100), pinChecked: true)
        let commit = try soak.apduIndex(of: debit, card: card, at: first, where: TearSoak.isWrite(8))
        soak.perform(debit, card: card, at: first, tear: TearPlan(atAPDU: commit, effect: .leftOld))
        let load = SoakOperation.load(Fen(5_000))
        let logWrite = try soak.apduIndex(of: load, card: card, at: soak.station, where: Self.isLogWrite)
        soak.perform(load, card: card, at: soak.station, tear: TearPlan(atAPDU: logWrite, effect: .notExecuted))
        #expect(card.purse == 25_000)
        #expect(soak.perform(debit, card: card, at: second, tear: nil).succeeded)
        soak.perform(.purseTap, card: card, at: first, tear: nil)
        let outcome = try #require(first.journal.inner.entries.first { $0.intent.kind == .purseDebit }).outcome
        // Fixed: any balance after before + 1 other than this intent's balance after proves not done.
        #expect(outcome == .notDone)
        #expect(outcome != .done(balanceAfter: 19_900, counterAfter: 2), "never a wrong decision")
    }
}
