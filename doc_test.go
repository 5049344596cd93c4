package apify_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestEveryExportedNameIsDocumented holds the module to its standard "every
// exported name has a doc comment": in each package but main, every exported
// func, method of an exported type, type, var, const, struct field (of an
// exported type, anonymous structs within it included) and interface method
// has a comment directly above it or a trailing line comment. A comment on a
// grouped declaration, type ( ... ) or const ( ... ), counts for its specs;
// one on a line of fields, such as ID, URL string, counts for each of them.
func TestEveryExportedNameIsDocumented(t *testing.T) {
	// The test runs in the root package's directory, the module root.
	if _, err := os.Stat("go.mod"); err != nil {
		t.Fatalf("not at the module root: %v", err)
	}
	fset := token.NewFileSet()
	dirs := map[string]bool{} // the directories of the packages checked
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == "." {
				return nil
			}
			// What the go tool ignores, and nested modules.
			name := d.Name()
			if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		if f.Name.Name == "main" {
			return nil
		}
		dirs[filepath.Dir(path)] = true
		for _, name := range undocumented(fset, f) {
			t.Errorf("%s has no doc comment", name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A walk that found nothing would pass: make sure it saw both libraries.
	for _, dir := range []string{".", "apifytest"} {
		if !dirs[dir] {
			t.Errorf("package directory %q was not checked (checked: %v)", dir, dirs)
		}
	}
}

// TestUndocumentedRules pins what undocumented reports, one case per rule.
func TestUndocumentedRules(t *testing.T) {
	const src = `package p

// Doc is documented.
func Doc() {}
func NoDoc() {}
func unexported() {}

//go:noinline
func DirectiveOnly() {}

// T is documented.
type T struct {
	// A is documented.
	A int
	B, C string // B and C are documented together.
	D, E string
	f    int
	// Nested is documented.
	Nested struct {
		In  int // In is documented.
		Out int
	}
	Ptr *struct{ Deep int }
	Embedded
	*PtrEmbedded
	unexportedEmbedded
}

type U int

// M is documented.
func (T) M() {}
func (*T) N() {}
func (t) O() {}
func (G[K]) P() {}
func (*H[K, V]) Q() {}

type t struct{ Hidden int }

// G is documented.
type G[K any] struct{ X K }

// H is documented.
type H[K, V any] struct{}

// I is documented.
type I interface {
	// Documented is.
	Documented()
	Bare()
	unexported()
	Embedded
}

// The group's comment documents its specs.
type (
	V1 int
	V2 int
)

type (
	// W1 is documented.
	W1 int
	W2 int
	W3 int // W3 is documented.
)

// The group's comment documents its specs.
const (
	K1 = iota
	K2
)

const (
	// L1 is documented.
	L1 = iota
	L2
	L3, l4
	l5
	L6 // L6 is documented.
)

var Single = 1

// Documented is.
var Documented = 1

var _ = 2
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, parser.ParseComments|parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	got := undocumented(fset, f)
	want := []string{
		"p.go:5:6: func NoDoc",
		"p.go:9:6: func DirectiveOnly",
		"p.go:16:2: field T.D",
		"p.go:16:5: field T.E",
		"p.go:21:3: field T.Nested.Out",
		"p.go:23:2: field T.Ptr",
		"p.go:23:15: field T.Ptr.Deep",
		"p.go:24:2: field T.Embedded",
		"p.go:25:3: field T.PtrEmbedded",
		"p.go:29:6: type U",
		"p.go:33:11: method T.N",
		"p.go:35:13: method G.P",
		"p.go:36:17: method H.Q",
		"p.go:41:23: field G.X",
		"p.go:50:2: method I.Bare",
		"p.go:64:2: type W2",
		"p.go:77:2: const L2",
		"p.go:78:2: const L3",
		"p.go:83:5: var Single",
	}
	if !slices.Equal(got, want) {
		t.Errorf("undocumented reported\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// undocumented lists, as "file:line:col: kind name", the exported names of f
// that have no doc comment.
func undocumented(fset *token.FileSet, f *ast.File) []string {
	var out []string
	report := func(pos token.Pos, kind, name string) {
		out = append(out, fset.Position(pos).String()+": "+kind+" "+name)
	}
	for _, decl := range f.Decls {
		switch d := decl.(type) {
		case *ast.FuncDecl:
			if !d.Name.IsExported() || documented(d.Doc) {
				continue
			}
			if d.Recv == nil {
				report(d.Name.Pos(), "func", d.Name.Name)
			} else if recv := receiverName(d.Recv.List[0].Type); ast.IsExported(recv) {
				report(d.Name.Pos(), "method", recv+"."+d.Name.Name)
			}
		case *ast.GenDecl:
			for _, spec := range d.Specs {
				switch s := spec.(type) {
				case *ast.TypeSpec:
					if !s.Name.IsExported() {
						continue
					}
					if !documented(d.Doc, s.Doc, s.Comment) {
						report(s.Name.Pos(), "type", s.Name.Name)
					}
					members(s.Name.Name, s.Type, report)
				case *ast.ValueSpec:
					if documented(d.Doc, s.Doc, s.Comment) {
						continue
					}
					for _, n := range s.Names {
						if n.IsExported() {
							report(n.Pos(), d.Tok.String(), n.Name)
						}
					}
				}
			}
		}
	}
	return out
}

// documented reports whether any of the comments says something: a
// directive such as //go:noinline alone is no documentation.
func documented(comments ...*ast.CommentGroup) bool {
	for _, c := range comments {
		if c.Text() != "" { // Text drops directives; a nil group has none
			return true
		}
	}
	return false
}

// members reports the undocumented exported fields and interface methods of
// the type expression x, the type of owner (T, or T.Field for a field of
// anonymous struct type), descending into anonymous structs wherever x holds
// them (*struct{...}, []struct{...}, ...). A type embedded in an interface
// declares no name of its own and needs no comment.
func members(owner string, x ast.Expr, report func(pos token.Pos, kind, name string)) {
	ast.Inspect(x, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.StructType:
			for _, fl := range n.Fields.List {
				names := fl.Names
				if len(names) == 0 { // embedded: the field takes its type's name
					names = []*ast.Ident{embeddedName(fl.Type)}
				}
				for _, name := range names {
					if !name.IsExported() {
						continue
					}
					if !documented(fl.Doc, fl.Comment) {
						report(name.Pos(), "field", owner+"."+name.Name)
					}
					// The fields of the field's own anonymous struct type.
					members(owner+"."+name.Name, fl.Type, report)
				}
			}
			return false // the fields' types were handled above
		case *ast.InterfaceType:
			for _, fl := range n.Methods.List {
				for _, name := range fl.Names { // none for an embedded type
					if name.IsExported() && !documented(fl.Doc, fl.Comment) {
						report(name.Pos(), "method", owner+"."+name.Name)
					}
				}
			}
			return false
		}
		return true
	})
}

// receiverName is the name of a method's receiver type: T for T, *T, T[K]
// and *T[K, V].
func receiverName(x ast.Expr) string {
	if id, ok := typeName(x).(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// embeddedName is the name an embedded field takes from its type: T for T,
// *T, pkg.T and T[K].
func embeddedName(x ast.Expr) *ast.Ident {
	switch e := typeName(x).(type) {
	case *ast.Ident:
		return e
	case *ast.SelectorExpr:
		return e.Sel
	}
	return ast.NewIdent("_") // not valid Go: gofmt would not parse it either
}

// typeName strips pointers, parentheses and type arguments from a type
// expression, leaving its name: an *ast.Ident, an *ast.SelectorExpr
// (pkg.T), or whatever else it is.
func typeName(x ast.Expr) ast.Expr {
	for {
		switch e := x.(type) {
		case *ast.StarExpr:
			x = e.X
		case *ast.ParenExpr:
			x = e.X
		case *ast.IndexExpr:
			x = e.X
		case *ast.IndexListExpr:
			x = e.X
		default:
			return x
		}
	}
}
