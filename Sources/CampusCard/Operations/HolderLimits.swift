import CardReader
import Crypto
import Foundation

/// One password, two limits (一密两限, seed 003): the holder's limits and PIN verifier live on the card (identity
/// block 5), the wrong-PIN counter in the purse record; see docs/card-layout.md "Holder limits and PIN".
extension CampusCardOperations {
    /// What the holder's limits decided for one debit: the purse record bits its commit writes.
    struct HolderCheck: Sendable {
        var wrongPINTries: UInt8
        var holderLimitsLowered: Bool
    }

    /// Decides whether debiting `amount` needs the PIN, and checks it against the card when it does.
    ///
    /// - Within the default limits on a card whose record says its limits are not lowered: nothing read, no PIN.
    /// - Otherwise the identity (sector 1) gives the holder's limits; within them: no PIN.
    /// - Over them: `pin-not-set` if the card carries no verifier, `pin-blocked` after three wrong PINs, `pin-required`
    ///   without a PIN; a wrong PIN rewrites the purse record with the counter one higher (same balance, card counter,
    ///   terminal and day: invisible to the tearing protocol's decisions) before `pin-wrong` or `pin-blocked` is
    ///   thrown; a right one returns tries 0, which the debit's own commit writes.
    func checkHolderLimits(_ amount: Fen, alreadyToday: Fen, state: PurseState, pin: PIN?) throws -> HolderCheck {
        let record = state.record
        var check = HolderCheck(wrongPINTries: record.wrongPINTries, holderLimitsLowered: record.holderLimitsLowered)
        if !record.holderLimitsLowered && HolderLimits.defaults.pinReason(for: amount, alreadyToday: alreadyToday) == nil {
            return check
        }
        let (settings, readable) = try holderSettings(uid: state.uid)
        if readable { check.holderLimitsLowered = settings.effectiveLimits.lowered }
        guard let reason = settings.effectiveLimits.pinReason(for: amount, alreadyToday: alreadyToday) else { return check }
        guard readable else {
            throw CardOperationError(.pinNotSet, "\(reason), and the card's identity record does not verify (a card-office change was interrupted?), so no PIN can be checked: the default limits apply until the card office repeats the change")
        }
        guard let verifier = settings.pinVerifier else {
            throw CardOperationError(.pinNotSet, "\(reason), and this card carries no PIN: the card office sets one (`cardctl card set-pin`); until then debits stay within the limits")
        }
        guard record.wrongPINTries < PINTries.blocked else {
            throw CardOperationError(.pinBlocked, "\(reason), and the card's PIN is blocked after \(PINTries.blocked) wrong tries: the card office resets it")
        }
        guard let pin else {
            throw CardOperationError(.pinRequired, "\(reason): ask for the PIN")
        }
        let macKey = try keystore.macKey(uid: state.uid, version: state.macVersion)
        if verifier.matches(pin, uid: state.uid, macKey: macKey) {
            check.wrongPINTries = 0
            return check
        }
        // Count the wrong try on the card before saying so: a card pulled before this write lands learns nothing.
        var counted = record
        counted.wrongPINTries = record.wrongPINTries + 1
        counted.holderLimitsLowered = check.holderLimitsLowered
        try authenticate(sector: Self.purseSector, role: .terminal, uid: state.uid, version: keystore.currentVersion)
        try session.write(block: Self.record, counted.encode(uid: state.uid, balance: state.balance, macKey: macKey))
        let left = Int(PINTries.blocked - counted.wrongPINTries)
        if left == 0 {
            throw CardOperationError(.pinBlocked, "wrong PIN, the \(PINTries.blocked)rd in a row: the card's PIN is now blocked; the card office resets it (debits within the limits still work)")
        }
        var error = CardOperationError(.pinWrong, "wrong PIN: \(left) \(left == 1 ? "try" : "tries") left before it blocks")
        error.pinTriesLeft = left
        throw error
    }

    /// The holder's settings from the identity; `readable` false (and the defaults, no PIN) when the identity does not
    /// verify — torn by an interrupted card-office write, or altered — so debits within the defaults still work.
    func holderSettings(uid: [UInt8]) throws -> (settings: HolderSettings, readable: Bool) {
        do {
            return (try readIdentity(uid: uid).holder, true)
        } catch let error as CardOperationError where error.code == .tampered || error.code == .garbled {
            return (.defaults, false)
        }
    }

    // MARK: Card office (key B)

    /// Sets the holder's limits (`card set-limits`). Card office only (key B). Does not touch the PIN or its counter.
    @discardableResult
    public func setHolderLimits(_ limits: HolderLimits) throws -> Identity {
        try updateHolderSettings(resetTries: false) { $0.limits = limits == .defaults ? nil : limits }
    }

    /// Sets a new PIN (`card set-pin`) and resets the wrong-PIN counter. Card office only (key B); also how a card of
    /// the first layout gets its first PIN.
    @discardableResult
    public func setPIN(_ pin: PIN) throws -> Identity {
        let uid = try session.uid()
        return try writeHolderSettings(resetTries: true) { settings, macKey in
            settings.pinVerifier = PINVerifier(pin: pin, uid: uid, macKey: macKey)
        }
    }

    /// Resets the wrong-PIN counter (`card reset-pin-tries`), keeping the PIN. Card office only (key B).
    @discardableResult
    public func resetPINTries() throws -> Identity {
        try updateHolderSettings(resetTries: true) { _ in }
    }

    func updateHolderSettings(resetTries: Bool, _ change: (inout HolderSettings) -> Void) throws -> Identity {
        try writeHolderSettings(resetTries: resetTries) { settings, _ in change(&settings) }
    }

    /// The card office's write of the holder settings. Order, so a tear never leaves a card that skips a lowered limit:
    /// (1) when the new limits are lowered, the purse record's `holderLimitsLowered` bit is set first; (2) block 5;
    /// (3) the record's final bits (bit cleared when the limits are no longer lowered; tries reset). The record keeps
    /// its counter, day, today's total and terminal: no log entry, nothing for rule 5 to see. A tear at a record write
    /// leaves it old, new, or garbled (then rebuilt from the log at the next read, with the bit from block 5 and one
    /// PIN try left); a tear at block 5 leaves it unverifiable (the default limits apply, no PIN) until the command is
    /// repeated. Repeating the command always completes it.
    func writeHolderSettings(resetTries: Bool, _ change: (inout HolderSettings, SymmetricKey) -> Void) throws -> Identity {
        let state = try readPurse()
        var identity = try identityRepairingTear(state)
        let version = identity.keyVersion
        let macKey = try keystore.macKey(uid: state.uid, version: state.macVersion)
        change(&identity.holder, macKey)
        let lowered = identity.holder.effectiveLimits.lowered
        var record = state.record
        let writeRecord = {
            try self.authenticate(sector: Self.purseSector, role: .loader, uid: state.uid, version: version)
            try self.session.write(block: Self.record, record.encode(uid: state.uid, balance: state.balance, macKey: macKey))
        }
        if lowered && !record.holderLimitsLowered {
            record.holderLimitsLowered = true
            try writeRecord()
        }
        try authenticate(sector: 1, role: .loader, uid: state.uid, version: version)
        try session.write(block: Identity.blocks.second, identity.encode(uid: state.uid, macKey: macKey).second)
        let target = (lowered: lowered, tries: resetTries ? 0 : record.wrongPINTries)
        if record.holderLimitsLowered != target.lowered || record.wrongPINTries != target.tries {
            record.holderLimitsLowered = target.lowered
            record.wrongPINTries = target.tries
            try writeRecord()
        }
        return identity
    }
}
