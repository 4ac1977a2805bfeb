import CardReader
import MifareClassic

extension CampusCardOperations {
    /// Re-keys the card's sectors to the keystore's current version: key B of the old version opens each sector and
    /// its trailer is rewritten with the new keys and the same access bits — nothing else is written. Records keep
    /// their MACs (the MAC key version is the card's, fixed at issue) and the identity keeps the version the card was
    /// issued with: the version that opens a sector is found by trying (`authenticate`).
    /// Returns the sectors re-keyed.
    ///
    /// Restartable: sectors already on the new version are skipped, so a re-key torn half-way is finished by running
    /// it again. One tear is beyond any protocol: a trailer left garbled locks its sector for good, so re-keying is done
    /// at the card office with the card held on the reader.
    @discardableResult
    public func rekey() throws -> [Int] {
        let target = keystore.currentVersion
        guard reselect != nil else {
            throw CardOperationError(.readerCannot, "re-keying tries old and new keys, which needs a reader connection that can re-select the card")
        }
        let state = try readPurse()
        let uid = state.uid
        var rekeyed: [Int] = []
        for sector in Self.ourSectors + state.logRing.addedSectors + [0] {
            let opened = try authenticate(sector: sector, role: .loader, uid: uid, version: target)
            guard opened != target else { continue }
            let keyA = sector == 0 ? MAD.keyA : try keystore.sectorKey(uid: uid, sector: sector, role: .terminal, version: target)
            let keyB = try keystore.sectorKey(uid: uid, sector: sector, role: .loader, version: target)
            let bits = Self.accessBits(sector: sector)
            let trailer = SectorTrailer(keyA: keyA, accessBits: bits, userByte: sector == 0 ? MAD.generalPurposeByte : 0x69, keyB: keyB)
            try session.write(block: session.size.trailerBlock(ofSector: sector), trailer.block)
            session.forgetAuthentication()
            rekeyed.append(sector)
        }
        return rekeyed
    }

    /// The access bits each sector gets (docs/card-layout.md); every log sector (4–5, and 6–11 in layout v2) as 4–5.
    static func accessBits(sector: Int) -> AccessBits {
        switch sector {
        case 0: return MAD.accessBits
        case 1: return AccessBits(data: AccessCondition(code: 0b100)!, trailer: AccessCondition(code: 0b011)!)
        case 2, 3: return AccessBits(groups: [.transportData, .valueBlock, .valueBlock, AccessCondition(code: 0b011)!])
        default: return AccessBits(data: .transportData, trailer: AccessCondition(code: 0b011)!)
        }
    }
}
