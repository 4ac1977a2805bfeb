import CampusCard
import Testing

@Suite struct FenTests {
    @Test(arguments: [("12.50", 1250), ("12.5", 1250), ("12", 1200), ("0.01", 1), ("0", 0), (".5", 50), ("007.05", 705), (" 3.00 ", 300),
                      ("21474836.47", 2_147_483_647)])
    func parsesYuan(text: String, fen: Int) throws {
        #expect(try Fen(yuan: text) == Fen(fen))
    }

    @Test(arguments: ["-1", "-0.01", "1.234", "abc", "", "1.2.3", "1e3", "１２", "12,50", "21474836.48", "99999999999", "0x10", "."])
    func refusesBadAmounts(text: String) {
        let error = #expect(throws: AmountError.self) { try Fen(yuan: text) }
        #expect(error?.description.isEmpty == false)
    }

    @Test func formatsAsYuan() throws {
        #expect(Fen(1250).yuan == "12.50")
        #expect(Fen(5).yuan == "0.05")
        #expect(Fen(-5).yuan == "-0.05")
        #expect(Fen(1000).description == "¥10.00")
        for fen in [0, 1, 99, 100, 12345, 2_147_483_647] {
            #expect(try Fen(yuan: Fen(fen).yuan) == Fen(fen))
        }
    }
}
