// Command gen-fixtures regenerates the TDX test fixtures:
//
//	go run ./attestation/tdx/simulate/cmd/gen-fixtures -out test/fixtures/tdx
//
// With the simulator key file (simulated/simulator.pem) in place the
// output is byte-identical to the committed fixtures; without it, new
// keys are created and written.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/attested-kms/attested-kms/attestation/tdx/simulate"
)

func main() {
	out := flag.String("out", "test/fixtures/tdx", "fixture directory")
	flag.Parse()
	if err := simulate.Generate(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen-fixtures:", err)
		os.Exit(1)
	}
}
