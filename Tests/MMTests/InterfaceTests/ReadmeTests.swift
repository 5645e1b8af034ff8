// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

/// README's code blocks marked `<!-- compiled by ReadmeTests -->` compile
/// against the built MM module (as a program's `main.swift`), so the quick
/// start and the tour cannot drift from the API. A block marked
/// `(after the tour above)` is compiled after the previous marked block.
@Suite("README code compiles")
struct ReadmeTests {
    static let root = SnippetCompiler.root

    /// The marked blocks, each with the code it continues.
    static func blocks() throws -> [(name: String, code: String)] {
        let text = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        var result: [(String, String)] = []
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)[...]
        var previous = ""
        while let line = lines.popFirst() {
            guard line.hasPrefix("<!-- compiled by ReadmeTests") else { continue }
            let continues = line.contains("after the tour above")
            guard lines.popFirst() == "```swift" else { continue }
            var code: [Substring] = []
            while let l = lines.popFirst(), l != "```" { code.append(l) }
            let block = code.joined(separator: "\n")
            let full = continues ? previous + "\n" + block : block
            result.append(("block \(result.count + 1) (\(code.first ?? ""))", full))
            previous = full
        }
        return result
    }

    @Test("the quick start, the tour and the typed layer compile")
    func compiles() throws {
        let blocks = try Self.blocks()
        #expect(blocks.count >= 3, "README lost its compiled blocks")
        let (made, reason) = try SnippetCompiler.make()
        guard let compiler = made else {
            print("skipped: \(reason ?? "")")
            return
        }
        defer { compiler.remove() }
        for (name, code) in blocks {
            let result = try compiler.compile((code.contains("import MM") ? "" : "import MM\n") + code)
            #expect(result.status == 0, "README \(name) does not compile:\n\(result.output)")
        }
    }
}
