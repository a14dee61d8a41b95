# Every SQL example of README.md runs, in the README's order, in one
# database, as a user would paste them; an example that shows its output
# (comment lines "-- a | b" right after a statement) must give that output.
# The examples are read from the README itself, never copied here.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Basename qw(dirname);

my $readme = dirname(__FILE__) . '/../../README.md';
open(my $fh, '<', $readme) or die "cannot read $readme: $!";
my @lines = <$fh>;
close($fh);

# the ```sql blocks, with the line each starts on
my @blocks;
my ($in, $start, $text) = (0, 0, '');
for my $i (0 .. $#lines)
{
	if (!$in && $lines[$i] =~ /^```sql\s*$/) { ($in, $start, $text) = (1, $i + 2, ''); next; }
	if ($in && $lines[$i] =~ /^```\s*$/) { push @blocks, [$start, $text]; $in = 0; next; }
	$text .= $lines[$i] if $in;
}
cmp_ok(scalar(@blocks), '>=', 20, 'the README has its SQL examples');

# A block's statements, each with the output shown under it, if any.
sub statements
{
	my ($block) = @_;
	my (@stmts, $cur, $shown);
	for my $l (split /\n/, $block)
	{
		if (defined $shown && $l =~ /^--\s.*\S/ && $l =~ /\|/)
		{
			push @$shown, $l;
			next;
		}
		undef $shown;
		next if !defined $cur && ($l =~ /^\s*$/ || $l =~ /^\s*--/);
		$cur .= "$l\n";
		if ($l =~ /;\s*$/)
		{
			push @stmts, [$cur, []];
			$shown = $stmts[-1][1];
			undef $cur;
		}
	}
	return @stmts;
}

sub cells { my ($row) = @_; return join '|', map { s/^\s+|\s+$//gr } split /\|/, $row, -1; }

my $node = PostgreSQL::Test::Cluster->new('readme');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ingest'
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE readme');

# the server-side file the load_file example reads
my $batch = '/tmp/ingest-batch-0042.csv';
open(my $out, '>', $batch) or die "cannot write $batch: $!";
print $out "organization_id,transaction_id,external_customer_id,code,timestamp,properties,value,decimal_value\n";
print $out "6f1c1f4e-0000-4000-8000-000000000001,file-1,customer-1,api_call,"
  . $node->safe_psql('postgres', 'SELECT now()') . ",{},1,\n";
close($out);
chmod 0644, $batch;

for my $b (@blocks)
{
	my ($line, $block) = @$b;
	for my $s (statements($block))
	{
		my ($sql, $shown) = @$s;
		my ($rc, $stdout, $stderr) = $node->psql('readme', $sql,
			extra_params => [ '-A', '-F', '|', '-t' ], on_error_stop => 1);
		is($rc, 0, "README line $line: " . (split /\n/, $sql)[0])
		  or diag($stderr);
		next unless @$shown;
		# the first shown line is the header
		my @want = map { cells(s/^--\s?//r) } @$shown[ 1 .. $#$shown ];
		my @have = map { cells($_) } grep { length } split /\n/, $stdout;
		is_deeply(\@have, \@want, "README line $line shows its output");
	}
}

# no example is an error in disguise: nothing set aside, nothing failing
is($node->safe_psql('readme', 'SELECT count(*) FROM ingest.rejects'), '0',
	'no README example sets a row aside');

unlink $batch;
$node->stop;
done_testing();
