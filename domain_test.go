package vigil_test

import (
	"go/build"
	"strings"
	"testing"
)

// TestStdlibOnly enforces that the domain package imports nothing but the
// standard library.
func TestStdlibOnly(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
			t.Errorf("domain package imports %q; it may import only the standard library", imp)
		}
	}
}
