// SPDX-License-Identifier: Apache-2.0
import MM
@testable import MMLab
import Testing

@Suite("Scenario files")
struct ScenarioDecoderTests {
    static let good = """
    name: small
    description: a small scenario
    seed: 1
    duration: 500ms
    arena:
      capacity: 16MiB
    locks:
      - name: journal
    caches:
      - name: c
        objectSize: 4KiB
        count: 100
        domain: filesystem
        lock: journal
    workers:
      - name: w
        threads: 2
        operations:
          - size: 1KiB..64KiB
            count: 2
            placement: automatic
            scopes: [excluding filesystem, quiet]
            locks: [journal]
            transaction: true
    """

    @Test("every built-in scenario decodes and validates")
    func builtins() throws {
        for (name, yaml) in BuiltinScenarios.all {
            let s = try ScenarioLoader.load(yaml: yaml, source: name)
            #expect(s.name == name)
        }
        let flagship = try ScenarioLoader.load(yaml: BuiltinScenarios.yaml(named: "transaction-commit")!, source: "x")
        #expect(flagship.semantics == [.retryForever, .useReserves, .retryLoop])
    }

    @Test("a good file decodes with sizes, ranges and durations")
    func good() throws {
        let s = try ScenarioLoader.load(yaml: Self.good, source: "small.yaml")
        #expect(s.arena.capacity.bytes == 16 << 20)
        #expect(s.duration.value == 0.5)
        #expect(s.workers[0].operations[0].size == SizeRange(1024, 64 << 10))
        #expect(s.caches?[0].objectSize.bytes == 4096)
    }

    /// Replaces `old` in the good file and returns the error.
    func error(replacing old: String, with new: String) throws -> ScenarioError {
        let yaml = Self.good.replacingAll(old, new)
        #expect(yaml != Self.good, "the replacement must apply")
        do {
            _ = try ScenarioLoader.load(yaml: yaml, source: "bad.yaml")
        } catch {
            return error
        }
        Issue.record("no error for \(new)")
        throw ScenarioError(source: "", line: 0, column: 0, field: "", message: "")
    }

    @Test("an unknown field is an error at its line and column, listing the known ones")
    func unknownField() throws {
        let e = try error(replacing: "        count: 2\n", with: "        cuont: 2\n")
        #expect(e.line == 20 && e.column == 9, "\(e)")
        #expect(e.field == "workers[0].operations[0].cuont")
        #expect(e.message.contains("unknown field \"cuont\"") && e.message.contains("count"))
        #expect(e.description.hasPrefix("bad.yaml:20:9: error: workers[0].operations[0].cuont:"))
    }

    @Test("a wrong type names the field and the place")
    func wrongType() throws {
        let e = try error(replacing: "    threads: 2", with: "    threads: many")
        #expect(e.field == "workers[0].threads")
        #expect(e.line == 17 && e.column == 14, "\(e)")
        #expect(e.message.contains("integer"))
        let list = try error(replacing: "scopes: [excluding filesystem, quiet]", with: "scopes: quiet")
        #expect(list.field == "workers[0].operations[0].scopes")
        #expect(list.message.contains("expected a list"))
    }

    @Test("impossible values: sizes above capacity, negative counts, undeclared locks, bad scopes", arguments: [
        ("size: 1KiB..64KiB", "size: 1KiB..64MiB", "workers[0].operations[0].size", "above the arena"),
        ("count: 100", "count: -5", "caches[0].count", "negative"),
        ("count: 100", "count: 100000", "caches[0].count", "exceed the arena"),
        ("locks: [journal]", "locks: [jounral]", "workers[0].operations[0].locks[0]", "no lock named"),
        ("excluding filesystem, quiet", "excluding filesystem, loud", "workers[0].operations[0].scopes[1]", "not a scope"),
        ("capacity: 16MiB", "capacity: 1MiB", "arena.capacity", "outside 4MiB"),
        ("duration: 500ms", "duration: soon", "duration", "not a duration"),
        ("size: 1KiB..64KiB", "size: 64KiB..1KiB", "workers[0].operations[0].size", "smallest first"),
        ("objectSize: 4KiB", "objectSize: 64KiB", "caches[0].objectSize", "slabs are at most 32 KiB"),
        ("transaction: true", "transaction: true\n        grow: c", "workers[0].operations[0].size", "larger than an object of c"),
    ])
    func impossible(old: String, new: String, field: String, message: String) throws {
        let e = try error(replacing: old, with: new)
        #expect(e.field == field, "\(e)")
        #expect(e.message.contains(message), "\(e)")
        #expect(e.line > 1 && e.column >= 1)
    }

    @Test("malformed YAML is one error with its line and column", arguments: [
        "name: [unclosed\n", "a: b\n  c: d\n", "workers:\n  - name: w\n   bad indentation: 1\n",
    ])
    func malformed(yaml: String) {
        #expect(throws: ScenarioError.self) { _ = try ScenarioLoader.load(yaml: yaml, source: "m.yaml") }
        do { _ = try ScenarioLoader.load(yaml: yaml, source: "m.yaml") } catch {
            #expect(error.line >= 1 && error.column >= 1)
            #expect(error.message.contains("malformed YAML") || error.message.contains("missing") || error.message.contains("unknown"),
                    "\(error)")
        }
    }

    @Test("a missing required field is named")
    func missing() throws {
        let e = try error(replacing: "seed: 1\n", with: "")
        #expect(e.message.contains("missing required field \"seed\""))
    }
}
