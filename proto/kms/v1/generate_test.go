package kmsv1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates the Go code from kms.proto into a
// temporary directory and compares it with what is committed, so a changed
// .proto without `make proto` fails CI instead of shipping a stale API.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("protoc not installed; .ci/run must install protobuf-compiler")
		}
		t.Skip("protoc not installed on this developer machine (apt-get install protobuf-compiler); CI runs this check")
	}
	plugin := func(name string) string {
		out, err := exec.Command("go", "tool", "-n", name).Output()
		if err != nil {
			t.Fatalf("locating %s: %v", name, err)
		}
		return string(bytes.TrimSpace(out))
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command(protoc, "-I", filepath.Join(root, "proto"), "-I", "/usr/include",
		"--plugin=protoc-gen-go="+plugin("protoc-gen-go"),
		"--plugin=protoc-gen-go-grpc="+plugin("protoc-gen-go-grpc"),
		"--go_out="+out, "--go_opt=module=github.com/attested-kms/attested-kms",
		"--go-grpc_out="+out, "--go-grpc_opt=module=github.com/attested-kms/attested-kms",
		filepath.Join(root, "proto/kms/v1/kms.proto"))
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	for _, f := range []string{"kms.pb.go", "kms_grpc.pb.go"} {
		want, err := os.ReadFile(filepath.Join(out, "proto/kms/v1", f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `make proto` and commit the result", f)
		}
	}
}
