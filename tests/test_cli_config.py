"""Differential corpus: the offline preview's stack-config pipeline against the Pulumi CLI.

Every case's expected outcome comes from Pulumi's Go source or its Go tests (pulumi/pulumi
pkg/workspace/config_project_test.go, sdk/go/common/workspace/project_test.go and
loaders_test.go, pkg/workspace/config.go) or from yaml.v3 (decode_test.go, resolve.go), named
in the case. Accepted cases give the effective config the program receives; refused cases give
the CLI's reason.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.settings import SECRET_KEYS
from offline import cli_config, program

ROOT = Path(__file__).resolve().parent.parent
TEST_PROJECT = "name: test\nruntime: dotnet\n"  # the Go tests' project header


def project(text: str) -> cli_config.Project:
    return cli_config.project_from_raw(cli_config._simplify(cli_config.read_yaml(text)))


def effective(project_text: str, stack_text: str) -> dict[str, str]:
    values = cli_config.effective_config("dev", project(project_text), stack_text)
    return {k: v.text for k, v in values.items()}


ACCEPTED = [
    # (source, project, stack, expected subset of the effective config)
    ("config_project_test.go TestStackConfigIsInheritedFromProjectConfig",
     "config:\n  instanceSize: t3.micro\n  instanceCount: 20\n  protect: true\n",
     "config:\n  test:instanceSize: t4.large\n",
     {"test:instanceSize": "t4.large", "test:instanceCount": "20", "test:protect": "true"}),
    ("config_project_test.go TestLoadingStackConfigWithoutNamespacingTheProject",
     "config:\n  aws:region: us-west-1\n  instanceSize: t3.micro\n",
     "config:\n  instanceSize: t4.large\n",
     {"test:instanceSize": "t4.large", "aws:region": "us-west-1"}),
    ("config_project_test.go TestUntypedProjectConfigValuesAreNotValidated",
     "config:\n  instanceSize: t3.micro\n  aws:region: us-west-1\n",
     "config:\n  instanceSize: 9999\n  aws:region: 42\n",
     {"test:instanceSize": "9999", "aws:region": "42"}),
    ("config_project_test.go TestUntypedProjectConfigValuesWithOnlyDefaultOrOnlyValue",
     "config:\n  instanceSize:\n    default: t3.micro\n  region:\n    value: us-west-1\n",
     "config:\n  aws:answer: 42\n",
     {"test:instanceSize": "t3.micro", "test:region": "us-west-1", "aws:answer": "42"}),
    ("config_project_test.go TestUntypedStackConfigValuesDoNeedProjectDeclaration (undeclared keys pass)",
     "config:\n  createVpc: true\n", "config:\n  instanceSize: 42\n",
     {"test:instanceSize": "42", "test:createVpc": "true"}),
    ("config_project_test.go TestUntypedProjectConfigObjectValuesPassedDownToStack",
     "config:\n  instanceSize:\n    value:\n      hello: world\n  aws:config:\n    value:\n      region: us-west-1\n",
     "config:\n  aws:whatever: 42\n",
     {"test:instanceSize": '{"hello":"world"}', "aws:config": '{"region":"us-west-1"}', "aws:whatever": "42"}),
    ("config_project_test.go TestStackConfigIntegerTypeIsCorrectlyValidated (valid)",
     "config:\n  importantNumber:\n    type: integer\n", "config:\n  test:importantNumber: 20\n",
     {"test:importantNumber": "20"}),
    ("config_project_test.go TestStackConfigSecretIsCorrectlyValidated (valid)",
     "config:\n  importantNumber:\n    type: integer\n    secret: true\n",
     "config:\n  test:importantNumber:\n    secure: MjA=\n", {"test:importantNumber": "MjA="}),
    ("config_project_test.go TestStackConfigDoesNotErrorWhenProjectHasNotDefinedConfig",
     "", "config:\n  test:anything: x\n", {"test:anything": "x"}),
    ("config_project_test.go TestStackConfigUInt64", "",
     "config:\n  test:instanceSize: 18446744073709551615\n", {"test:instanceSize": "18446744073709551615"}),
    ("loaders_test.go TestUnmarshallNil (a null list item)", "", "config:\n  aws:id:\n    -\n",
     {"aws:id": "[null]"}),
    ("loaders_test.go TestUnmarshalTime (a timestamp is time.Time's String())", "",
     "config:\n  aws:time: 2020-01-01T00:00:00Z\n", {"aws:time": "2020-01-01 00:00:00 +0000 UTC"}),
    ("loaders_test.go checkForEmptyConfig (a key with no value is \"\")", "", "config:\n  test:empty:\n",
     {"test:empty": ""}),
    ("yaml.v3 decode_test.go octal: 02472256 -> 685230 (a leading 0 is octal)", "",
     "config:\n  test:port: 02472256\n", {"test:port": "685230"}),
    ("yaml.v3 decode_test.go octal: -0o2472256", "", "config:\n  test:port: -0o2472256\n",
     {"test:port": "-685230"}),
    ("yaml.v3 decode_test.go v: 0xA", "", "config:\n  test:n: 0xA\n", {"test:n": "10"}),
    ("yaml.v3 decode_test.go bin: 0b1010_0111_0100_1010_1110 (underscores dropped)", "",
     "config:\n  test:n: 0b1010_0111_0100_1010_1110\n", {"test:n": "685230"}),
    ("yaml.v3 resolve.go: 08 is no octal, so a float, re-encoded as 8", "", "config:\n  test:n: 08\n",
     {"test:n": "8"}),
    ("yaml.v3 resolve.go + object.go MarshalString: 2e8 is a float, JSON-marshalled by Go", "",
     "config:\n  test:n: 2e8\n", {"test:n": "200000000"}),
    ("yaml.v3 resolve.go: a whole float is re-encoded with 'g' and read back as an int", "",
     "config:\n  test:n: 20.0\n", {"test:n": "20"}),
    ("yaml.v3 resolve.go: 1.5 stays a float", "", "config:\n  test:n: 1.5\n", {"test:n": "1.5"}),
    ("yaml.v3 resolve.go: yes is text in YAML 1.2", "", "config:\n  test:b: yes\n", {"test:b": "yes"}),
    ("yaml.v3 resolve.go: True is a bool, marshalled as true", "", "config:\n  test:b: True\n", {"test:b": "true"}),
    ("yaml.v3 decode.go scalar(): a quoted scalar is text", "", "config:\n  test:n: \"020\"\n", {"test:n": "020"}),
    ("yaml.v3 decode.go scalar(): !!str keeps the text", "", "config:\n  test:n: !!str 020\n", {"test:n": "020"}),
    ("yaml.v3 resolve.go: a timestamp with an offset keeps it", "",
     "config:\n  test:t: 2015-02-24T18:19:39.12-03:00\n", {"test:t": "2015-02-24 18:19:39.12 -0300 -0300"}),
    ("yaml.v3 resolve.go: a date alone is midnight UTC", "", "config:\n  test:t: 2015-02-24\n",
     {"test:t": "2015-02-24 00:00:00 +0000 UTC"}),
    ("yaml.v3 resolve.go: 2015-02-30 is no date, so text", "", "config:\n  test:t: 2015-02-30\n",
     {"test:t": "2015-02-30"}),
    ("object.go unmarshalObject: a list becomes a JSON object value, keys sorted", "",
     "config:\n  test:l:\n    - {b: 1, a: x}\n    - y\n", {"test:l": '[{"a":"x","b":1},"y"]'}),
    ("encoding/json: <, > and & are escaped in an object value", "", "config:\n  test:l: [a<b&c>]\n",
     {"test:l": '["a\\u003cb\\u0026c\\u003e"]'}),
    ("loaders.go readFileStripUTF8BOM", "", "\ufeffconfig:\n  test:n: x\n", {"test:n": "x"}),
    ("key.go ParseKey: <namespace>:config:<name> is the old form of <namespace>:<name>", "",
     "config:\n  aws:config:region: us-east-1\n", {"aws:region": "us-east-1", "aws:config:region": None}),
    ("key.go ParseKey: the project's own key in the old form reaches the program by its name", "",
     "config:\n  test:config:n: x\n", {"test:n": "x", "test:config:n": None}),
    ("loaders.go stackConfigNamespacedWithProject, map.go UnmarshalYAML: spellings with one value are one key", "",
     "config:\n  n: x\n  test:n: x\n  test:config:n: x\n", {"test:n": "x"}),
    ("config.go validateStackConfigValue: an integer may be written with a sign (strconv.Atoi)",
     "config:\n  n:\n    type: integer\n", "config:\n  test:n: '+20'\n", {"test:n": "+20"}),
    ("config.go createConfigValue: an array default becomes a JSON object value",
     "config:\n  l:\n    type: array\n    items:\n      type: string\n    default: [a, b]\n", "",
     {"test:l": '["a","b"]'}),
    ("scannerc.go yaml_parser_scan_to_next_token: a tab after a key's ':' is a blank", "",
     "config:\n  test:n:\tx\n  test:m:\t\t'y'\n", {"test:n": "x", "test:m": "y"}),
    ("scannerc.go yaml_parser_scan_to_next_token: a tab before a comment is a blank", "",
     "config:\n  test:n: x\t# the comment\n  test:m: y \t#\tanother\n", {"test:n": "x", "test:m": "y"}),
    ("scannerc.go yaml_parser_scan_to_next_token: a tab is a blank in the flow context", "",
     "config:\n  test:l: [a,\tb ,\t c]\n", {"test:l": '["a","b","c"]'}),
    ("yaml.v3 (run): a BOM after the first byte is text, here the start of a top-level key", "",
     "config:\n  test:m: y\n\ufeff  test:n: x\n", {"test:m": "y", "test:n": None}),
    ("project.go ValidateConfigValue: an empty array matches array<string>",
     "config:\n  l:\n    type: array\n    items:\n      type: string\n", "config:\n  test:l: []\n", {"test:l": "[]"}),
]

REFUSED = [
    # (source, project, stack, the CLI's reason)
    ("scannerc.go yaml_parser_scan_to_next_token: a tab may not indent a line", "",
     "config:\n\ttest:n: x\n", "found character '\\t' that cannot start any token"),
    ("scannerc.go yaml_parser_scan_to_next_token: a tab may not follow '-'", "",
     "config:\n  test:l:\n    -\tx\n", "found character '\\t' that cannot start any token"),
    ("config_project_test.go TestStackConfigErrorsWhenStackValueIsNotCorrectlyTyped",
     "config:\n  values:\n    type: array\n    items:\n      type: string\n    default: [value]\n",
     "config:\n  test:values: someValue\n", "Stack 'dev' with configuration key 'values' must be of type 'array<string>'"),
    ("config_project_test.go TestStackConfigIntegerTypeIsCorrectlyValidated (invalid)",
     "config:\n  importantNumber:\n    type: integer\n", "config:\n  test:importantNumber: hello\n",
     "Stack 'dev' with configuration key 'importantNumber' must be of type 'integer'"),
    ("config_project_test.go TestStackConfigErrorsWhenMissingStackValueForConfigTypeWithNoDefault",
     "config:\n  values:\n    type: array\n    items:\n      type: string\n", "",
     "Stack 'dev' is missing configuration value 'values'"),
    ("config_project_test.go TestStackConfigErrorsWhenMissingTwoStackValueForConfigTypeWithNoDefault",
     "config:\n  values:\n    type: string\n  another:\n    type: string\n", "",
     "Stack 'dev' is missing configuration values 'another' and 'values'"),
    ("config_project_test.go TestStackConfigErrorsWhenMissingMultipleStackValueForConfigTypeWithNoDefault",
     "config:\n  values:\n    type: string\n  hello:\n    type: string\n  world:\n    type: string\n", "",
     "Stack 'dev' is missing configuration values 'hello', 'values' and 'world'"),
    ("config_project_test.go TestStackConfigSecretIsCorrectlyValidated (invalid)",
     "config:\n  importantNumber:\n    type: integer\n    secret: true\n", "config:\n  test:importantNumber: 20\n",
     "Stack 'dev' with configuration key 'importantNumber' must be encrypted as it's secret"),
    ("config.go mergeConfig + validateStackConfigValue: a secret key's plaintext default is merged, then refused",
     "config:\n  key:\n    type: string\n    secret: true\n    default: \"\"\n", "",
     "Stack 'dev' with configuration key 'key' must be encrypted as it's secret"),
    ("project.go ValidateConfigValue: boolean is exactly true or false",
     "config:\n  b:\n    type: boolean\n", "config:\n  test:b: yes\n",
     "Stack 'dev' with configuration key 'b' must be of type 'boolean'"),
    ("project.go ValidateConfigValue + yaml.v3: a number inside array<string>",
     "config:\n  l:\n    type: array\n    items:\n      type: string\n", "config:\n  test:l: [020]\n",
     "Stack 'dev' with configuration key 'l' must be of type 'array<string>'"),
    ("project.go ValidateConfigValue: a mapping inside array<string>",
     "config:\n  l:\n    type: array\n    items:\n      type: string\n", "config:\n  test:l:\n    - example.org: 9f86\n",
     "Stack 'dev' with configuration key 'l' must be of type 'array<string>'"),
    ("project.go ValidateConfigValue: strconv.Atoi refuses 2_0 when quoted",
     "config:\n  n:\n    type: integer\n", "config:\n  test:n: '2_0'\n",
     "Stack 'dev' with configuration key 'n' must be of type 'integer'"),
    ("project.go ValidateConfigValue: a float is no integer", "config:\n  n:\n    type: integer\n",
     "config:\n  test:n: 1.5\n", "Stack 'dev' with configuration key 'n' must be of type 'integer'"),
    ("project.go ValidateConfigValue: a null is \"\", no integer", "config:\n  n:\n    type: integer\n",
     "config:\n  test:n:\n", "Stack 'dev' with configuration key 'n' must be of type 'integer'"),
    ("project_test.go TestProjectLoadYAML / project.go SimplifyMarshalledValue", "", "config:\n  4: x\n",
     "expected only string keys, got '%!s(int=4)'"),
    ("project.go SimplifyMarshalledValue: a bool key", "", "config:\n  true: x\n",
     "expected only string keys, got '%!s(bool=true)'"),
    ("project.go SimplifyMarshalledProject: a stack file that is a list", "", "- a\n",
     "expected project to be an object, was '[]interface {}'"),
    ("yaml.v3 decode.go mapping(): a key written twice", "", "config:\n  test:a: 1\n  test:a: 2\n",
     'mapping key "test:a" already defined at line 2'),
    ("key.go ParseKey: more than two colons", "", "config:\n  a:b:c:d: x\n", "could not parse a:b:c:d as a configuration key"),
    ("object.go MarshalString: .inf cannot be JSON-marshalled", "", "config:\n  test:n: .inf\n",
     "json: unsupported value: +Inf"),
    ("yaml.v3 resolve.go: !!int on text", "", "config:\n  test:n: !!int abc\n", "cannot decode !!str `abc` as a !!int"),
]

PROJECTS_REFUSED = [
    ("project_test.go TestProjectValidationFailsForIncorrectDefaultValueType",
     "config:\n  importantNumber:\n    type: integer\n    default: hello\n",
     "The default value specified for configuration key 'importantNumber' is not of the expected type 'integer'"),
    ("project_test.go TestProjectConfigCannotHaveBothValueAndDefault",
     "config:\n  instanceSize:\n    default: t3.micro\n    value: t4.large\n",
     "project config 'instanceSize' cannot have both a 'default' and 'value' attribute"),
    ("project_test.go TestProjectConfigCannotBeTypedArrayWithoutItems",
     "config:\n  values:\n    type: array\n", "declares an array but does not specify the underlying type"),
    ("project_test.go TestNamespacedProjectConfigShouldNotBeExplicitlyTyped",
     "config:\n  aws:region:\n    type: string\n", "is not namespaced by the project and should not define a type"),
    ("project_test.go TestNamespacedProjectConfigShouldNotBeProvideDefault",
     "config:\n  aws:region:\n    default: us-west-1\n", "should not define a default value"),
]


@pytest.mark.parametrize("source,project_text,stack_text,expected", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted_as_the_cli_accepts(source, project_text, stack_text, expected):
    config = effective(TEST_PROJECT + project_text, stack_text)
    assert {k: config.get(k) for k in expected} == expected, source


@pytest.mark.parametrize("source,project_text,stack_text,reason", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_the_clis_reason(source, project_text, stack_text, reason):
    with pytest.raises(cli_config.CliRefusal) as refusal:
        effective(TEST_PROJECT + project_text, stack_text)
    assert any(reason in p for p in refusal.value.problems), (source, refusal.value.problems)
    assert all("\n" not in p for p in refusal.value.problems)


@pytest.mark.parametrize("source,project_text,reason", PROJECTS_REFUSED, ids=[c[0] for c in PROJECTS_REFUSED])
def test_project_declarations_refused_with_the_clis_reason(source, project_text, reason):
    with pytest.raises(cli_config.CliRefusal) as refusal:
        project(TEST_PROJECT + project_text)
    assert any(reason in p for p in refusal.value.problems), (source, refusal.value.problems)


def test_the_corpus_is_at_least_forty_cases():
    assert len(ACCEPTED) + len(REFUSED) + len(PROJECTS_REFUSED) >= 40


def test_two_spellings_of_one_key_are_refused_not_guessed():
    """loaders.go stackConfigNamespacedWithProject writes both into one Go map: one wins at random."""
    with pytest.raises(cli_config.CliRefusal) as refusal:
        effective(TEST_PROJECT, "config:\n  n: 1\n  test:n: 2\n")
    assert "test:n is written as n and as test:n with different values" in refusal.value.problems[0]
    with pytest.raises(cli_config.CliRefusal) as refusal:
        effective(TEST_PROJECT, "config:\n  test:n: 1\n  test:config:n: 2\n")
    assert "test:n is written as test:n and as test:config:n with different values" in refusal.value.problems[0]


def test_a_merge_key_fails_closed():
    with pytest.raises(cli_config.CliRefusal) as refusal:
        effective(TEST_PROJECT, "base: &b {test:n: 1}\nconfig:\n  <<: *b\n")
    assert "merge key" in refusal.value.problems[0]


# --- this project's own declarations and stacks ----------------------------------------------

STACKS = [ROOT / "Pulumi.example.yaml", *sorted((ROOT / "examples").glob("Pulumi.*.yaml"))]


def test_pulumi_yaml_passes_the_clis_project_rules():
    decls = cli_config.load_project(ROOT / "Pulumi.yaml")
    assert decls.name == "backup-mx" and decls.config
    for key, decl in decls.config.items():
        assert not (decl.secret and decl.has_default), f"{key}: a secret key with a plaintext default"


def test_pulumi_yaml_passes_the_shared_project_schema():
    """The upstream schema kept in shared/ (older and stricter: every declaration has a type)."""
    import jsonschema
    import yaml
    shared = ROOT.parent / "shared" / "schemas" / "pulumi-project.schema.json"
    schema = json.loads((shared if shared.exists() else cli_config.SCHEMA_FILE).read_text())
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load((ROOT / "Pulumi.yaml").read_text()))


@pytest.mark.parametrize("stack", STACKS, ids=[s.name for s in STACKS])
def test_every_example_stack_passes_the_clis_rules_once_its_secrets_are_set(stack):
    """What the README's deploy commands add: `pulumi config set --secret headscalePreauthKey`."""
    decls = cli_config.load_project(ROOT / "Pulumi.yaml")
    text = stack.read_text() + "  backup-mx:headscalePreauthKey:\n    secure: v1:c2VjcmV0:c2VjcmV0\n"
    config = cli_config.effective_config(stack.stem, decls, text)
    assert config["backup-mx:headscalePreauthKey"].secure
    assert all(not d.secret or config[f"backup-mx:{k}"].secure for k, d in decls.config.items())


def test_the_readme_stack_passes_the_clis_rules(tmp_path):
    """A stack written from the README's deploy commands: every required key, the secret set
    with --secret, nothing else; then read as the offline preview reads it."""
    decls = cli_config.load_project(ROOT / "Pulumi.yaml")
    required = {k: d for k, d in decls.config.items() if not d.has_default}
    values = {"domains": "[example.org]", "cloudflareZoneIds": "[example.org=" + "0" * 32 + "]",
              "primaryMxHost": "mail.example.org", "ociCompartmentId": "ocid1.tenancy.oc1..aaaa",
              "homelabCidr": "203.0.113.7/32", "certbotEmail": "ops@example.org",
              "headscaleLoginServer": "https://hs.example.org"}
    assert set(required) == set(values) - {"headscaleLoginServer"}  # that one the default tailnet requires
    text = "config:\n" + "".join(f"  backup-mx:{k}: {v}\n" for k, v in values.items()) + \
        "  backup-mx:headscalePreauthKey:\n    secure: v1:abc\n"
    config = cli_config.effective_config("prod", decls, text)
    assert config["backup-mx:mxPreference"].text == "20" and config["backup-mx:wireguardPrivateKey"].text == ""
    stack = tmp_path / "Pulumi.prod.yaml"
    stack.write_text(text)
    plain, secret, _ = program.read_stack_file(stack, "backup-mx")
    assert plain["domains"] == '["example.org"]' and set(secret) == {"headscalePreauthKey"}


@pytest.mark.parametrize("stack,needed", [("Pulumi.example.yaml", True), ("examples/Pulumi.tailscale.yaml", True),
                                          ("examples/Pulumi.notailnet.yaml", False)])
def test_an_unset_shape_secret_previews_with_a_placeholder_and_says_preview_refuses(tmp_path, stack, needed):
    """The tailnet key defaults to "" (tailnet none needs none), so the CLI passes an unset one
    through and the program refuses it; offline, a placeholder and a note say so."""
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text((ROOT / stack).read_text())
    _, secret, notes = program.read_stack_file(path, "backup-mx")
    line = [n for n in notes if "headscalePreauthKey" in n]
    assert ("headscalePreauthKey" in secret) == needed and len(line) == int(needed)
    if needed:
        assert "`pulumi preview` will refuse this stack" in line[0]
        assert "pulumi config set --secret headscalePreauthKey" in line[0]


# --- no traceback for any file the CLI can read -----------------------------------------------

TRICKY = ["020", "0x1F", "1_000", "2e8", ".inf", "-.nan", "~", "null", "true", "yes", "2026-01-01",
          "2026-13-01", "'quoted'", "!!str 5", "!!binary aGk=", "[a, 1]", "{a: b}", "[{a: b}]", "{secure: x}",
          "{secure: 5}", "[]", "{}", "- x", "\"\\u2028\"", "|\n    block", "&a x", "18446744073709551616",
          "-9223372036854775809", "0o", "+", "-", ".", "0b102", "ssh-ed25519 AAAA", "[[nested]]"]



@given(key=st.sampled_from(sorted(cli_config.load_project(ROOT / "Pulumi.yaml").config) + ["123", "a:b:c:d", "oci:x"]),
       value=st.sampled_from(TRICKY), bare=st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_input_the_cli_can_read_gives_a_traceback(key, value, bare, tmp_path, capsys):
    """One value of the example stack replaced by a tricky YAML form: the preview exits 0 or 2,
    with one line per problem on stderr and never a traceback or asyncio noise."""
    from offline import preview
    name = key if bare or ":" in key else f"backup-mx:{key}"
    lines = [line for line in (ROOT / "Pulumi.example.yaml").read_text().splitlines()
             if not line.startswith(f"  backup-mx:{key}:")]
    indented = value.replace("\n", "\n  ")
    stack = tmp_path / "Pulumi.fuzz.yaml"
    stack.write_text("\n".join(lines) + f"\n  {name}: {indented}\n")
    code = preview.main(["--config", str(stack), "--no-policy", "--out", str(tmp_path / "build")])
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err and "Task was destroyed" not in err and "Exception" not in err, err
    assert (code == 0) == (err == ""), err


def test_pulumi_new_prompts_for_every_required_scalar_key():
    """`pulumi new <repo>` asks for template.config keys, and stores each answer as a string
    (newcmd/config.go encryptTemplateConfig: config.NewValue or NewSecureValue). So the template
    asks for every required key that is a string, with secret as declared, and the quickstart
    says how to set the required arrays, which a string answer would not satisfy."""
    import yaml
    doc = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    decls = cli_config.load_project(ROOT / "Pulumi.yaml")
    asked = doc["template"]["config"]
    required = {k: d for k, d in decls.config.items() if not d.has_default}
    scalars = {k for k, d in required.items() if doc["config"][k].get("type", "string") == "string"}
    # The default tailnet, headscale, needs its server and key, which default to "" so that
    # tailnet none needs neither (components/settings/access.py says which a shape requires).
    tailnet = {"tailnet", "headscaleLoginServer", "headscalePreauthKey"}
    assert set(asked) == scalars | tailnet
    assert all(bool(asked[k].get("secret")) == (k in SECRET_KEYS) and asked[k]["description"] for k in asked)
    assert asked["tailnet"]["default"] == doc["config"]["tailnet"]["default"]
    arrays = set(required) - scalars
    assert arrays and all(f"pulumi config set --path '{k}[0]'" in doc["template"]["quickstart"] for k in arrays)


# --- No traceback for any file: yaml.v3's limits, and a fuzz over raw bytes -------------------

EXAMPLE_TEXT = (ROOT / "Pulumi.example.yaml").read_text()


def with_provider_value(text: str) -> str:
    """The example stack plus a provider key (passed through, never typed) holding `text`."""
    return EXAMPLE_TEXT.replace("\nconfig:\n", f"\nconfig:\n  oci:lab: {text}\n", 1)


def laughs(levels: int, fanout: int) -> str:
    """A billion-laughs document: each anchor a list of `fanout` aliases of the one before."""
    rows = [f"a0: &a0 [{', '.join(['x'] * fanout)}]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fanout)}]" for i in range(1, levels + 1)]
    return "\n".join(rows) + "\n"


def read(tmp_path, text: str):
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(text)
    return program.read_stack_file(path, "backup-mx", "dev")


LIMITS_READ = {
    # scannerc.go max_flow_level and max_indents: 10,000 levels are read, as yaml.v3 reads them
    "1,000 flow levels": with_provider_value("[" * 1000 + "]" * 1000),
    "5,000 flow levels": with_provider_value("[" * 5000 + "]" * 5000),
    "1,000 block levels": with_provider_value("\n" + "".join("  " * (i + 2) + f"k{i}:\n" for i in range(1000))),
    # decode.go allowedAliasRatio: 99% of a small document may come from aliases
    "2 levels of 10 aliases": EXAMPLE_TEXT + laughs(2, 10),
}
LIMITS_REFUSED = {
    "10,001 flow levels": (with_provider_value("[" * 10001 + "]" * 10001), "exceeded max depth of 10000"),
    "10,001 block levels": ("- " * 10001 + "x\n", "exceeded max depth of 10000"),
    # decode.go alias(): an alias met again while it is being decoded
    "an anchor holding itself (mapping)": ("config:\n  oci:lab: &x {b: *x}\n", "anchor 'x' value contains itself"),
    "an anchor holding itself (list)": ("config:\n  oci:lab: &x [*x]\n", "anchor 'x' value contains itself"),
    # decode.go unmarshal(): most of a large document from alias expansion
    "4 levels of 10 aliases": (EXAMPLE_TEXT + laughs(4, 10), "document contains excessive aliasing"),
    "a billion laughs": (EXAMPLE_TEXT + laughs(9, 9), "document contains excessive aliasing"),
}


@pytest.mark.parametrize("text", LIMITS_READ.values(), ids=LIMITS_READ.keys())
def test_a_file_within_yaml_v3_limits_is_read(tmp_path, text):
    plain, _, _ = read(tmp_path, text)
    assert plain["domains"] == '["example.org"]'


@pytest.mark.parametrize("text,reason", LIMITS_REFUSED.values(), ids=LIMITS_REFUSED.keys())
def test_a_file_past_yaml_v3_limits_is_refused_in_one_line(tmp_path, text, reason):
    with pytest.raises(program.StackFileError) as refused:
        read(tmp_path, text)
    assert reason in str(refused.value) and len(str(refused.value).splitlines()) == 1, str(refused.value)


YAMLISH = st.text(st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`,?~ \t\n\r\ufeff0.9") + ["\u00e9", "\x00", "\x85"]),
                  max_size=200)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=300), YAMLISH.map(str.encode),
                 YAMLISH.map(lambda t: with_provider_value(t).encode())))
def test_no_file_gives_a_traceback(tmp_path_factory, data):
    """Any bytes at all: read, or refused with a StackFileError naming the problem."""
    path = tmp_path_factory.mktemp("fuzz") / "Pulumi.dev.yaml"
    path.write_bytes(data)
    try:
        program.read_stack_file(path, "backup-mx", "dev")
    except program.StackFileError as refused:
        assert str(refused).strip()
