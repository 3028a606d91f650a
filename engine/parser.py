"""Recursive-descent parser for Falco conditions.

Grammar (loosest first): `or` < `and` < prefix `not` (also `not(`) < check or
`( expr )`. A check is `field op value`, `field exists`, a transformer check, or a
bare identifier (a macro reference). The accepted language is libsinsp's, so a rule
that Falco parses parses here, and the same inputs are rejected.

`parse_condition` raises only ConditionSyntaxError, with the offset where parsing
stopped; deep nesting is bounded (Falco's limit for rules is 1000).
"""

from __future__ import annotations

from falconer.engine import ast
from falconer.engine.lexer import (
    BARE_STRING, FIELD_ARG_BARE, FIELD_NAME, HEX_NUMBER, IDENTIFIER, LIST_OPS, NOT_BLANK, NUM_OPS,
    NUMBER,
    STR_OP_MODIFIERS, STR_OPS, TRANSFORMERS, UNARY_OPS, VAL_TRANSFORMER, ConditionSyntaxError,
    Cursor,
)

MAX_DEPTH = 1000

_ALL_OPS = ", ".join(f"'{o.strip()}'" for o in (*UNARY_OPS, *NUM_OPS, *STR_OPS, *LIST_OPS))
_ALL_TRANSFORMERS = ", ".join(f"'{t[:-1]}'" for t in (VAL_TRANSFORMER, *TRANSFORMERS))


def parse_condition(text: str) -> ast.Expr:
    """Parse a whole condition; anything left over is a syntax error."""
    if not text:
        raise ConditionSyntaxError("filter input string is empty", 0)
    parser = _Parser(text)
    try:
        expr = parser.parse_or()
    except RecursionError:
        raise ConditionSyntaxError(f"exceeded max depth limit of {MAX_DEPTH}",
                                   parser.cur.pos) from None
    if not parser.cur.at_end():
        raise ConditionSyntaxError(
            f"unexpected token after '{parser.cur.last}', expecting 'or', 'and'", parser.cur.pos)
    return expr


def parse_field_or_transformer(text: str) -> tuple[ast.Field | ast.Transformer, int]:
    """A field (`proc.aname[2]`) or transformer (`toupper(proc.name)`) at the start of
    `text`, and where it ends: the tokens of an output format."""
    parser = _Parser(text)
    cur = parser.cur
    try:
        if cur.pattern(FIELD_NAME):
            return parser.parse_field_rest(cur.last, 0), cur.pos
        if cur.one_of(TRANSFORMERS):
            cur.blank()
            return parser.parse_transformer_rest(cur.last[:-1], 0), cur.pos
    except RecursionError:
        raise ConditionSyntaxError(f"exceeded max depth limit of {MAX_DEPTH}", cur.pos) from None
    raise ConditionSyntaxError("expected a field or a transformer", 0)


class _Nesting:
    """The depth guard around every recursive rule: `with self._nesting:` counts one
    level (Falco refuses conditions nested deeper than MAX_DEPTH). A `with` block holds
    no Python frame of its own, so the guard trips before Python's recursion limit."""

    def __init__(self, cur: Cursor) -> None:
        self.cur = cur
        self.depth = 0

    def __enter__(self) -> None:
        self.depth += 1
        if self.depth >= MAX_DEPTH:
            raise ConditionSyntaxError(f"exceeded max depth limit of {MAX_DEPTH}", self.cur.pos)

    def __exit__(self, *exc_info: object) -> None:
        self.depth -= 1


class _Parser:
    """One parse: the cursor plus the recursion depth guard."""

    def __init__(self, text: str) -> None:
        self.cur = Cursor(text)
        self._nesting = _Nesting(self.cur)

    def _fail(self, message: str) -> ConditionSyntaxError:
        """A syntax error where the cursor stopped."""
        return ConditionSyntaxError(message, self.cur.pos)

    # -- boolean structure -------------------------------------------------------------

    def parse_or(self, keyword: str = "or") -> ast.Expr:
        """Operands joined by `keyword`: `or` joins `and` chains, `and` joins `not`
        operands; a single operand is returned as is. The keyword must be followed by a
        blank or by `(` (`a or(b)` is valid, `a orb` is not).

        One method for both levels, recursing into itself for `and`, so that a nesting
        level costs no more Python frames than the depth counter allows for.
        """
        with self._nesting:
            cur = self.cur
            pos = cur.pos
            cur.blank()
            children = [self.parse_or("and") if keyword == "or" else self.parse_not()]
            cur.blank()
            while cur.literal(keyword):
                if cur.blank():
                    children.append(self.parse_or("and") if keyword == "or" else self.parse_not())
                elif cur.literal("("):
                    children.append(self.parse_embedded())
                else:
                    raise self._fail(f"expected blank or '(' after '{keyword}'")
                cur.blank()
            if len(children) == 1:
                return children[0]
            node = ast.Or if keyword == "or" else ast.And
            return node(tuple(children), pos)

    def parse_not(self) -> ast.Expr:
        """Any number of prefix `not` (an even count cancels out), then a check."""
        with self._nesting:
            cur = self.cur
            pos = cur.pos
            cur.blank()
            negate = False
            while cur.pattern(NOT_BLANK):
                negate = not negate
            if cur.literal("not("):
                negate = not negate
                child = self.parse_embedded()
            else:
                child = self.parse_check()
            return ast.Not(child, pos) if negate else child

    def parse_embedded(self) -> ast.Expr:
        """The rest of `( expr )` after the opening parenthesis."""
        with self._nesting:
            self.cur.blank()
            child = self.parse_or()
            self.cur.blank()
            if not self.cur.literal(")"):
                raise self._fail("expected a ')' token")
            return child

    def parse_check(self) -> ast.Expr:
        """A parenthesised expression, a field or transformer check, or a macro name."""
        with self._nesting:
            cur = self.cur
            cur.blank()
            pos = cur.pos
            if cur.literal("("):
                result = self.parse_embedded()
            elif cur.pattern(FIELD_NAME):
                result = self.parse_check_rest(self.parse_field_rest(cur.last, pos), pos)
            elif cur.one_of(TRANSFORMERS):
                cur.blank()
                left = self.parse_transformer_rest(cur.last[:-1], pos)
                result = self.parse_check_rest(left, pos)
            elif cur.pattern(IDENTIFIER):
                result = ast.Identifier(cur.last, pos)
            else:
                raise self._fail("expected a '(' token, a field check, or an identifier")
            return result

    # -- fields and transformers -------------------------------------------------------

    def parse_field_rest(self, name: str, pos: int) -> ast.Field:
        """A field whose name was just read, with its optional `[arg]`."""
        return ast.Field(name, self.parse_optional_arg(), pos)

    def parse_optional_arg(self) -> str | None:
        """A bracketed argument (`[2]`, `['x y']`), or None when there is none."""
        cur = self.cur
        if not cur.literal("["):
            return None
        if not cur.quoted() and not cur.pattern(FIELD_ARG_BARE):
            raise self._fail("expected a valid field argument: a quoted string or a bare string")
        arg = cur.last
        if not cur.literal("]"):
            raise self._fail("expected a ']' token")
        return arg

    def parse_transformer_rest(self, name: str, pos: int) -> ast.Transformer:
        """The arguments and `)` of a transformer whose `name(` was just read."""
        with self._nesting:
            cur = self.cur
            cur.blank()
            args = [self.parse_transformer_arg()]
            cur.blank()
            while cur.literal(","):
                args.append(self.parse_transformer_arg())
                cur.blank()
            if not cur.literal(")"):
                raise self._fail("expected a ')' token closing the transformer")
            return ast.Transformer(name, tuple(args), self.parse_optional_arg(), pos)

    def parse_transformer_arg(self) -> ast.Expr:
        """One transformer argument: number, string, list, transformer or field."""
        with self._nesting:
            cur = self.cur
            cur.blank()
            pos = cur.pos
            if cur.pattern(HEX_NUMBER) or cur.pattern(NUMBER):
                result: ast.Expr = ast.Value(cur.last, False, pos)
            elif cur.quoted():
                result = ast.Value(cur.last, True, pos)
            elif cur.literal("("):
                result = self.parse_transformer_list(pos)
            elif cur.one_of(TRANSFORMERS):
                result = self.parse_transformer_rest(cur.last[:-1], pos)
            elif cur.pattern(FIELD_NAME):
                result = self.parse_field_rest(cur.last, pos)
            else:
                raise self._fail("expected field transformer argument: field, transformer, "
                                 "quoted string, number, or transformer list")
            return result

    def parse_transformer_list(self, pos: int) -> ast.TransformerList:
        """The rest of a `(a, b)` list argument after its `(`; it may be empty."""
        cur = self.cur
        cur.blank()
        children: list[ast.Expr] = []
        if cur.literal(")"):
            return ast.TransformerList((), pos)
        children.append(self.parse_transformer_list_arg())
        cur.blank()
        while cur.literal(","):
            cur.blank()
            children.append(self.parse_transformer_list_arg())
            cur.blank()
        if not cur.literal(")"):
            raise self._fail("expected ')'")
        return ast.TransformerList(tuple(children), pos)

    def parse_transformer_list_arg(self) -> ast.Expr:
        """One element of a transformer list argument (no nested lists)."""
        cur = self.cur
        pos = cur.pos
        if cur.pattern(FIELD_NAME):
            return self.parse_field_rest(cur.last, pos)
        if cur.one_of(TRANSFORMERS):
            cur.blank()
            return self.parse_transformer_rest(cur.last[:-1], pos)
        if cur.quoted():
            return ast.Value(cur.last, True, pos)
        if cur.pattern(HEX_NUMBER) or cur.pattern(NUMBER):
            return ast.Value(cur.last, False, pos)
        raise self._fail("expected transformer list argument: field, transformer, quoted "
                         "string, or number")

    # -- checks --------------------------------------------------------------------------

    def parse_check_rest(self, left: ast.Field | ast.Transformer, pos: int) -> ast.Expr:
        """The operator and right-hand side of a check whose left side is parsed.

        `op oneof|anyof|allof` is a modifier only when a list (or a list name) follows
        and that name is not a boolean keyword; otherwise the word is the value
        (`proc.name = oneof` compares with the string "oneof").
        """
        with self._nesting:
            cur = self.cur
            cur.blank()
            if cur.operator(UNARY_OPS):
                return ast.UnaryCheck(left, cur.last.strip(), pos)
            cur.blank()
            right: ast.Value | ast.ListValue | ast.Transformer
            if cur.operator(NUM_OPS):
                op = cur.last
                right = self.parse_num_value()
            elif cur.operator(STR_OPS):
                op = cur.last
                had_blank = op[0].isalpha() or cur.blank()
                saved = cur.pos, cur.last
                if (had_blank and cur.operator(STR_OP_MODIFIERS) and self._list_follows()
                        and not self._bool_keyword_follows()):
                    op = f"{op.strip()} {cur.last.strip()}"
                    right = self.parse_list_value(allow_transformer=False)
                else:
                    cur.pos, cur.last = saved
                    right = self.parse_str_value(no_transformer=False)
            elif cur.operator(LIST_OPS):
                op = cur.last
                right = self.parse_list_value(allow_transformer=True)
            else:
                raise self._fail(f"expected a valid check operator: one of {_ALL_OPS}")
            return ast.BinaryCheck(left, op.strip(), right, pos)

    def _list_follows(self) -> bool:
        """Whether a list or a list name follows (the cursor does not move)."""
        cur = self.cur
        if cur.peek() == "(":
            return True
        saved = cur.pos, cur.last
        found = cur.pattern(IDENTIFIER)
        cur.pos, cur.last = saved
        return found

    def _bool_keyword_follows(self) -> bool:
        """Whether `and`/`or`/`not` follows as a whole word (then it is no list name)."""
        rest = self.cur.text[self.cur.pos:]
        for kw in ("and", "or", "not"):
            if rest.startswith(kw) and (len(rest) == len(kw) or not rest[len(kw)].isalnum()):
                return True
        return False

    def parse_num_value(self) -> ast.Value | ast.Transformer:
        """The right side of `<`, `<=`, `>`, `>=`: a number or a transformer."""
        with self._nesting:
            cur = self.cur
            cur.blank()
            pos = cur.pos
            result: ast.Value | ast.Transformer | None = self.try_transformer_or_val()
            if result is None:
                if not (cur.pattern(HEX_NUMBER) or cur.pattern(NUMBER)):
                    raise self._fail("expected a number value or a field with a valid transformer: "
                                     + _ALL_TRANSFORMERS)
                result = ast.Value(cur.last, False, pos)
            return result

    def parse_str_value(self, no_transformer: bool) -> ast.Value | ast.Transformer:
        """A quoted or bare string, or (unless `no_transformer`, as inside lists) a
        right-hand transformer."""
        with self._nesting:
            cur = self.cur
            cur.blank()
            pos = cur.pos
            if not no_transformer:
                result = self.try_transformer_or_val()
                if result is not None:
                    return result
            if cur.quoted():
                value = ast.Value(cur.last, True, pos)
            elif cur.pattern(BARE_STRING):
                value = ast.Value(cur.last, False, pos)
            elif no_transformer:
                raise self._fail("expected a string value")
            else:
                raise self._fail("expected a string value or a field with a valid transformer: "
                                 + _ALL_TRANSFORMERS)
            return value

    def try_list(self) -> ast.ListValue | None:
        """A `(a, b, "c d")` list, or None when no `(` follows. `()` is an empty list:
        a failed first element is backtracked (depth included) so that `)` can follow."""
        cur = self.cur
        pos = cur.pos
        if not cur.literal("("):
            return None
        cur.blank()
        values: list[ast.Value] = []
        saved = cur.pos, cur.last, self._nesting.depth
        try:
            first = self.parse_str_value(no_transformer=True)
        except ConditionSyntaxError:
            cur.pos, cur.last, self._nesting.depth = saved
            first = None
        if first is not None:
            assert isinstance(first, ast.Value)
            values.append(first)
            cur.blank()
            while cur.literal(","):
                item = self.parse_str_value(no_transformer=True)
                assert isinstance(item, ast.Value)
                values.append(item)
                cur.blank()
        if not cur.literal(")"):
            raise self._fail("expected a ')' token")
        return ast.ListValue(tuple(values), pos)

    def parse_list_value(self, allow_transformer: bool) -> ast.ListValue | ast.Value | \
            ast.Transformer:
        """The right side of a list operator: a list, a list name, or (for `in`,
        `intersects`, `pmatch`) a transformer."""
        with self._nesting:
            cur = self.cur
            cur.blank()
            pos = cur.pos
            result: ast.ListValue | ast.Value | ast.Transformer | None = self.try_list()
            if result is None and allow_transformer:
                result = self.try_transformer_or_val()
            if result is None:
                if not cur.pattern(IDENTIFIER):
                    if allow_transformer:
                        raise self._fail("expected a list, an identifier, or a field with a valid "
                                         "transformer: " + _ALL_TRANSFORMERS)
                    raise self._fail("expected a list or an identifier")
                result = ast.Value(cur.last, False, pos)
            return result

    def try_transformer_or_val(self) -> ast.Transformer | None:
        """A right-hand `val(field)` or transformer, or None when neither follows."""
        with self._nesting:
            cur = self.cur
            cur.blank()
            pos = cur.pos
            result: ast.Transformer | None = None
            if cur.literal(VAL_TRANSFORMER):
                cur.blank()
                field_pos = cur.pos
                if not cur.pattern(FIELD_NAME):
                    raise self._fail("expected a field within 'val' transformer")
                field = self.parse_field_rest(cur.last, field_pos)
                cur.blank()
                if not cur.literal(")"):
                    raise self._fail("expected a ')' token closing the transformer")
                result = ast.Transformer("val", (field,), self.parse_optional_arg(), pos)
            elif cur.one_of(TRANSFORMERS):
                cur.blank()
                result = self.parse_transformer_rest(cur.last[:-1], pos)
            return result

